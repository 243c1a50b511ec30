"""The status state machine shared by tasks and agent executions."""

from __future__ import annotations

from typing import Literal

from deduction.domain.errors import IllegalTransitionError

Status = Literal["pending", "running", "completed", "failed", "stopped"]
STATUSES: tuple[Status, ...] = ("pending", "running", "completed", "failed", "stopped")
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "stopped"})
ACTIVE: frozenset[str] = frozenset({"pending", "running"})

_ALLOWED: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "failed", "stopped"}),
    "running": frozenset({"completed", "failed", "stopped"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "stopped": frozenset(),
}


def check_transition(kind: str, current: str, new: str) -> None:
    """Raise IllegalTransitionError unless current -> new is allowed; terminal states absorb."""
    if new not in _ALLOWED:
        raise IllegalTransitionError(kind, current, new)
    if new not in _ALLOWED[current]:
        raise IllegalTransitionError(kind, current, new)
