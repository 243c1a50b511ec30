"""Stream messages: their shapes, their resume tokens, and their SSE and WebSocket frames."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from deduction.adapters.http import views
from deduction.adapters.http.envelope import Timestamp
from deduction.adapters.http.schemas import InputError
from deduction.domain.status import Status
from deduction.projections.changes import RANKS, Change

LAST_RANK = max(RANKS.values())
_encode = msgspec.json.Encoder().encode


class TaskState(msgspec.Struct):
    """What a stream shows of a task: status and counts."""

    id: int
    name: str
    status: Status
    total_agents: int
    completed_agents: int
    failed_agents: int
    start_time: Timestamp | None
    end_time: Timestamp | None
    error_message: str | None
    stop_requested: bool
    engine_unreachable_since: Timestamp | None
    engine_error: str | None
    update_at: Timestamp


class AgentState(msgspec.Struct):
    """What a stream shows of an agent execution: status and progress."""

    id: int
    deduction_task_id: int
    seq: int
    agent_name: str
    side: str
    status: Status
    engine_agent_id: str | None
    progress: int
    start_time: Timestamp | None
    end_time: Timestamp | None
    result: dict[str, Any] | None
    error_message: str | None
    retry_count: int
    max_retry: int
    update_at: Timestamp


class TaskMessage(msgspec.Struct, tag_field="type", tag="task"):
    id: str
    position: int
    task: TaskState


class AgentMessage(msgspec.Struct, tag_field="type", tag="agent"):
    id: str
    position: int
    agent: AgentState


class LogsMessage(msgspec.Struct, tag_field="type", tag="logs"):
    id: str
    position: int
    agent_execution_id: int
    lines: list[views.LogLine]


class HistoryMessage(msgspec.Struct, tag_field="type", tag="history"):
    id: str
    position: int
    entry: views.HistoryEntry


class EndMessage(msgspec.Struct, tag_field="type", tag="end"):
    id: str
    position: int
    task_id: int
    status: Status


class ResumeMessage(msgspec.Struct, tag_field="type", tag="resume"):
    """Sent before the server closes a stream it cannot keep: reconnect after `after`."""

    after: str
    reason: str


class HeartbeatMessage(msgspec.Struct, tag_field="type", tag="heartbeat"):
    """WebSocket only: nothing changed; every change up to `position` was sent."""

    position: int


@dataclass(frozen=True, slots=True)
class Frame:
    """One message, encoded once for every subscriber that receives it: its JSON (a WebSocket
    text frame) and its event-stream record."""

    key: tuple[int, int]
    token: str
    kind: str
    text: str  # the message's JSON
    sse: bytes  # the event-stream record: `id:` is the resume token (none on a resume message)


def _frame(key: tuple[int, int], tok: str, kind: str, body: bytes) -> Frame:
    head = b"id: " + tok.encode() + b"\n" if tok else b""
    record = head + b"event: " + kind.encode() + b"\ndata: " + body + b"\n\n"
    return Frame(key, tok, kind, body.decode(), record)


def token(change: Change, last_at_position: bool) -> str:
    """The resume token: the position alone when nothing follows at that position."""
    return str(change.position) if last_at_position else f"{change.position}.{RANKS[change.kind]}"


def format_token(key: tuple[int, int]) -> str:
    return str(key[0]) if key[1] >= LAST_RANK else f"{key[0]}.{key[1]}"


def parse_token(text: str | None, name: str) -> tuple[int, int]:
    """The key of the last message a client received; (0, LAST_RANK) for none."""
    if not text:
        return 0, LAST_RANK
    position, _, rank = text.strip().partition(".")
    if not position.isdigit() or (rank and not rank.isdigit()) or len(position) > 18:
        raise InputError(name, f"{name} must be a position, or a message id such as 12 or 12.1")
    return int(position), int(rank) if rank else LAST_RANK


def frame(change: Change, tok: str, min_level: int) -> Frame | None:
    """The change as a message, with log lines below `min_level` left out (None if no line is left)."""
    key, row = change.key, change.rows[0]
    message: msgspec.Struct
    if change.kind == "task":
        message = TaskMessage(tok, change.position, views.from_row(TaskState, row))
    elif change.kind == "agent":
        message = AgentMessage(tok, change.position, views.from_row(AgentState, row))
    elif change.kind == "history":
        message = HistoryMessage(tok, change.position, views.from_row(views.HistoryEntry, row))
    elif change.kind == "end":
        message = EndMessage(tok, change.position, change.task_id, row["status"])
    else:
        lines = [
            views.from_row(views.LogLine, r) for r in change.rows if r["level_no"] >= min_level
        ]
        if not lines:
            return None
        message = LogsMessage(tok, change.position, row["agent_execution_id"], lines)
    return _frame(key, tok, change.kind, _encode(message))


def resume_frame(after: str, reason: str) -> Frame:
    return _frame((0, 0), "", "resume", _encode(ResumeMessage(after, reason)))


def heartbeat_text(position: int) -> str:
    return _encode(HeartbeatMessage(position)).decode()


SSE_HEARTBEAT = b": heartbeat\n\n"
SSE_RETRY = b"retry: 2000\n\n"
