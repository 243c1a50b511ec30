"""IdempotencyKey: a client's key for a create request, and the answer that request got."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event


class IdempotencyKey(Aggregate):
    """Saved with the task it created: its id derives from the key, so a retry finds it.

    `request_hash` fingerprints the request, so the same key with another body is told apart.
    """

    class Created(Aggregate.Created):
        key: str
        request_hash: str
        task_id: int
        status: str

    @staticmethod
    def create_id(key: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"deduction:idempotency-key:create-task:{key}")

    @event(Created)
    def __init__(self, key: str, request_hash: str, task_id: int, status: str) -> None:
        self.key, self.request_hash = key, request_hash
        self.task_id, self.status = task_id, status
