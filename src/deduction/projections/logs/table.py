"""The log tables: one row per line, and per-level line counts kept for exact totals."""

from __future__ import annotations

DDL = [
    """
    CREATE TABLE IF NOT EXISTS agent_execution_log (
        id bigint PRIMARY KEY,
        agent_execution_id bigint NOT NULL,
        deduction_task_id bigint NOT NULL,
        timestamp timestamptz NOT NULL,
        level varchar(16) NOT NULL,
        level_no smallint NOT NULL,
        message text NOT NULL,
        source varchar(64),
        extra_data jsonb,
        create_at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS idx_agent_log_execution_id ON agent_execution_log(agent_execution_id, id)",
    "CREATE INDEX IF NOT EXISTS idx_agent_log_timestamp ON agent_execution_log(timestamp)",
    "CREATE INDEX IF NOT EXISTS idx_agent_log_level ON agent_execution_log(level)",
    "CREATE INDEX IF NOT EXISTS idx_agent_log_task ON agent_execution_log(deduction_task_id, id)",
    (
        "CREATE INDEX IF NOT EXISTS idx_agent_log_execution_level"
        " ON agent_execution_log(agent_execution_id, level_no, id)"
    ),
    (
        "CREATE INDEX IF NOT EXISTS idx_agent_log_task_level"
        " ON agent_execution_log(deduction_task_id, level_no, id)"
    ),
    """
    CREATE TABLE IF NOT EXISTS agent_execution_log_count (
        agent_execution_id bigint NOT NULL,
        deduction_task_id bigint NOT NULL,
        level_no smallint NOT NULL,
        lines bigint NOT NULL,
        PRIMARY KEY (agent_execution_id, level_no)
    )
    """,
    "CREATE INDEX IF NOT EXISTS idx_agent_log_count_task ON agent_execution_log_count(deduction_task_id)",
    # An execution whose last lines were read after it ended: no more lines will come.
    """
    CREATE TABLE IF NOT EXISTS agent_execution_log_drained (
        agent_execution_id bigint PRIMARY KEY,
        deduction_task_id bigint NOT NULL,
        position bigint NOT NULL
    )
    """,
    (
        "CREATE INDEX IF NOT EXISTS idx_agent_log_drained_task"
        " ON agent_execution_log_drained(deduction_task_id)"
    ),
]

# What readers see of a log line, in the order the API answers with.
READ_COLUMNS = (
    "id", "agent_execution_id", "timestamp", "level", "message", "source", "extra_data",
    "create_at",
)  # fmt: skip
