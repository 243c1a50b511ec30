"""DDL of the read tables (the plan's columns and indexes, plus what the queries need)."""

from __future__ import annotations

TRACKING = """
CREATE TABLE IF NOT EXISTS projection_tracking (
    name text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""

TASKS = [
    """
    CREATE TABLE IF NOT EXISTS deduction_task (
        id bigint PRIMARY KEY,
        scheme_id bigint NOT NULL,
        env_instance_id bigint NOT NULL,
        name varchar(128) NOT NULL UNIQUE,
        description varchar(512),
        status varchar(32) NOT NULL DEFAULT 'pending',
        engine_task_id varchar(128),
        engine_url varchar(256),
        scheme_snapshot jsonb NOT NULL,
        start_time timestamptz,
        end_time timestamptz,
        total_agents integer NOT NULL DEFAULT 0,
        completed_agents integer NOT NULL DEFAULT 0,
        failed_agents integer NOT NULL DEFAULT 0,
        error_message text,
        create_at timestamptz NOT NULL,
        update_at timestamptz NOT NULL,
        created_by varchar(64),
        stop_requested boolean NOT NULL DEFAULT false,
        stop_delivered boolean NOT NULL DEFAULT false,
        pending_updates integer NOT NULL DEFAULT 0,
        submission_attempts integer NOT NULL DEFAULT 0,
        engine_unreachable_since timestamptz,
        engine_error text,
        version integer NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS idx_deduction_task_status ON deduction_task(status)",
    "CREATE INDEX IF NOT EXISTS idx_deduction_task_scheme_id ON deduction_task(scheme_id)",
    "CREATE INDEX IF NOT EXISTS idx_deduction_task_create_at ON deduction_task(create_at)",
    "CREATE INDEX IF NOT EXISTS idx_deduction_task_newest ON deduction_task(id DESC)",
    "CREATE INDEX IF NOT EXISTS idx_deduction_task_status_newest ON deduction_task(status, id DESC)",
    # the worker's sweep: "ended within the last minute" without scanning every ended task
    "CREATE INDEX IF NOT EXISTS idx_deduction_task_end_time ON deduction_task(end_time)",
]

AGENTS = [
    """
    CREATE TABLE IF NOT EXISTS agent_execution (
        id bigint PRIMARY KEY,
        deduction_task_id bigint NOT NULL,
        agent_meta_id bigint NOT NULL,
        agent_name varchar(64) NOT NULL,
        agent_load varchar(128) NOT NULL,
        side varchar(64) NOT NULL,
        params jsonb NOT NULL,
        status varchar(32) NOT NULL DEFAULT 'pending',
        engine_agent_id varchar(128),
        progress integer NOT NULL DEFAULT 0,
        start_time timestamptz,
        end_time timestamptz,
        result jsonb,
        error_message text,
        retry_count integer NOT NULL DEFAULT 0,
        max_retry integer NOT NULL DEFAULT 3,
        create_at timestamptz NOT NULL,
        update_at timestamptz NOT NULL,
        seq integer NOT NULL,
        version integer NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS idx_agent_execution_task_id ON agent_execution(deduction_task_id)",
    "CREATE INDEX IF NOT EXISTS idx_agent_execution_status ON agent_execution(status)",
    "CREATE INDEX IF NOT EXISTS idx_agent_execution_task_status"
    " ON agent_execution(deduction_task_id, status)",
]

LOGS = [
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
    "CREATE INDEX IF NOT EXISTS idx_agent_log_execution_level"
    " ON agent_execution_log(agent_execution_id, level_no, id)",
    "CREATE INDEX IF NOT EXISTS idx_agent_log_task_level"
    " ON agent_execution_log(deduction_task_id, level_no, id)",
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
]

HISTORY = [
    """
    CREATE TABLE IF NOT EXISTS deduction_task_history (
        id bigint PRIMARY KEY,
        deduction_task_id bigint NOT NULL,
        change_type varchar(32) NOT NULL,
        change_description varchar(256),
        old_value jsonb,
        new_value jsonb,
        change_time timestamptz NOT NULL,
        operator varchar(64),
        agent_execution_id bigint,
        create_at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS idx_task_history_task_id ON deduction_task_history(deduction_task_id, id)",
    "CREATE INDEX IF NOT EXISTS idx_task_history_change_time ON deduction_task_history(change_time)",
]

CATALOG = [
    """
    CREATE TABLE IF NOT EXISTS catalog_agent_meta (
        id bigint PRIMARY KEY,
        name varchar(64) NOT NULL,
        load varchar(128) NOT NULL,
        description varchar(512),
        create_at timestamptz NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS catalog_scheme (
        id bigint PRIMARY KEY,
        name varchar(128) NOT NULL,
        config jsonb NOT NULL,
        create_at timestamptz NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS catalog_env_instance (
        id bigint PRIMARY KEY,
        name varchar(128) NOT NULL,
        config jsonb NOT NULL,
        create_at timestamptz NOT NULL
    )
    """,
]
