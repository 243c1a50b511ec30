"""What the event store says of admissions: their order, and the Engine slots held at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

from deduction.application.service import DeductionApp
from deduction.application.transcoder import decode_state
from deduction.domain import TERMINAL

RANK = {"low": 0, "normal": 1, "high": 2}


@dataclass
class Admissions:
    order: list[int] = field(default_factory=list)
    """Task ids in the order their first "submission requested" was saved."""
    most_held: int = 0
    """The most tasks admitted and not yet ended at any point of the event order."""
    overtaken: list[tuple[int, int]] = field(default_factory=list)
    """(admitted, waiting): a task admitted while a better-placed one was queued."""


def admissions(app: DeductionApp) -> Admissions:
    """Walk every event in order; a queued task's key is (priority rank, creation order)
    (no aging: the runs are much shorter than QUEUE_AGING)."""
    found = Admissions()
    queued: dict[int, tuple[int, int]] = {}
    held: set[int] = set()
    for n in app.recorder.select_notifications(start=1, limit=1_000_000):
        kind = n.topic.rpartition(":")[2]
        task_id = UUID(str(n.originator_id)).int
        if not kind.startswith("DeductionTask."):
            continue
        state = decode_state(n.state)
        if kind == "DeductionTask.Created":
            queued[task_id] = (RANK[state.get("priority", "normal")], -n.id)
        elif kind == "DeductionTask.PriorityRaised" and task_id in queued:
            queued[task_id] = (RANK[state["new_priority"]], queued[task_id][1])
        elif kind == "DeductionTask.SubmissionRequested" and task_id in queued:
            best = max(queued, key=lambda t: queued[t])
            if best != task_id:
                found.overtaken.append((task_id, best))
            del queued[task_id]
            held.add(task_id)
            found.order.append(task_id)
            found.most_held = max(found.most_held, len(held))
        elif kind == "DeductionTask.StatusChanged" and state["new_status"] in TERMINAL:
            held.discard(task_id)
            queued.pop(task_id, None)
    return found
