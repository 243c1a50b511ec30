"""Domain errors: each says which rule a command broke."""

from __future__ import annotations


class DomainError(Exception):
    """A command broke a rule of the domain; the API answers 409 or 422."""


class IllegalTransitionError(DomainError):
    def __init__(self, kind: str, current: str, new: str) -> None:
        super().__init__(f"{kind} cannot change status from {current!r} to {new!r}")
        self.kind, self.current, self.new = kind, current, new


class TaskAlreadyEndedError(DomainError):
    def __init__(self, status: str, action: str) -> None:
        super().__init__(f"cannot {action}: the task has already ended with status {status!r}")
        self.status, self.action = status, action


class PriorityNotRaisedError(DomainError):
    """A queued task's priority can only be raised, and only while it waits for admission."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot change the priority: {reason}")
        self.reason = reason
