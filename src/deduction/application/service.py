"""The eventsourcing Application: command methods, the only caller of save()."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import BaseAggregate, DomainEvent
from eventsourcing.persistence import IntegrityError, Recording, Transcoder
from msgspec import json as msgspec_json

from deduction.application.ports import EventStreams
from deduction.application.transcoder import MsgspecTranscoder
from deduction.domain import (
    AgentExecution,
    AgentMeta,
    DeductionTask,
    EngineLoad,
    EnvInstance,
    IdempotencyKey,
    Scheme,
    TaskName,
)
from deduction.domain.catalog import catalog_id
from deduction.domain.engine_load import SamplePolicy
from deduction.domain.ids import new_id, to_uuid
from deduction.domain.task import DEFAULT_PRIORITY
from deduction.domain.times import utc_now

T = TypeVar("T")
_COMMAND_ATTEMPTS = 5


class CommandError(Exception):
    """A command refused by the application (not a domain rule)."""


class NotFoundError(CommandError):
    def __init__(self, kind: str, ident: int | str) -> None:
        super().__init__(f"{kind} {ident} does not exist")
        self.kind, self.ident = kind, ident


class UnknownReferenceError(CommandError):
    """A command names a catalog entry or execution that does not exist (422)."""

    def __init__(self, field_name: str, ident: int, detail: str = "does not exist") -> None:
        super().__init__(f"{field_name}: {ident} {detail}")
        self.field, self.ident = field_name, ident


class DuplicateError(CommandError):
    def __init__(self, kind: str, key: object) -> None:
        super().__init__(f"a {kind} named {key!r} already exists")
        self.kind, self.key = kind, key


class IdempotencyKeyReusedError(CommandError):
    """The client's Idempotency-Key was first used for a different request (422)."""

    field = "Idempotency-Key"

    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key!r} was already used for a different request")
        self.key = key


@dataclass(frozen=True)
class Receipt:
    """What a command returns: its answer and the notification position its events reached."""

    position: int
    data: dict[str, Any] = field(default_factory=dict)
    # The stored topics of the events saved: read-your-writes waits only for the read models
    # that take one of them (empty: wait for every read model).
    topics: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Saved:
    position: int
    topics: frozenset[str]


@dataclass(frozen=True)
class AgentConfig:
    agent_meta_id: int
    side: str
    params: dict[str, Any]
    max_retry: int = 3


@dataclass(frozen=True)
class NewTask:
    name: str
    description: str | None
    scheme_id: int
    env_instance_id: int
    agent_configs: list[AgentConfig]
    priority: str = DEFAULT_PRIORITY


def retry_on_conflict(command: Callable[[], T]) -> T:
    """Run a load-decide-save command again when a concurrent writer won the race."""
    for attempt in range(_COMMAND_ATTEMPTS):
        try:
            return command()
        except IntegrityError:
            if attempt == _COMMAND_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


class _Collected(ProcessingEvent[UUID]):
    """The library's ProcessingEvent, telling aggregates from events by their classes first:
    its check against a runtime Protocol costs about 0.1 ms per object on Python 3.11, more
    than encoding and storing the event."""

    def collect_events(self, *objs: Any, **kwargs: Any) -> None:
        for obj in objs:
            if isinstance(obj, DomainEvent):
                self.events.append(obj)
            elif isinstance(obj, BaseAggregate):
                self.events += obj.collect_events()
                self.aggregates[obj.id] = obj
            else:
                super().collect_events(obj)
        self.saved_kwargs.update(kwargs)


class DeductionApp(Application[UUID]):
    """Commands of the service; queries are answered by the read tables, never here."""

    name = "Deduction"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        self._catalog_cache: dict[tuple[str, int], Any] = {}
        # Reads many aggregates in one round trip; the composition root sets it where the
        # store has one (without it, each is read on its own).
        self.bulk: EventStreams | None = None

    def construct_transcoder(self) -> Transcoder:
        return MsgspecTranscoder()

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """`Application.save`, collecting through `_Collected`."""
        processing_event = _Collected()
        processing_event.collect_events(*objs, **kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # the library's deprecated hook, as it calls it
        return recordings

    # -- helpers -----------------------------------------------------------------------------

    def _save(self, *objs: Any) -> Saved:
        recordings: list[Recording[UUID]] = self.save(*objs)
        return Saved(
            max((r.notification.id for r in recordings), default=0),
            frozenset(r.notification.topic for r in recordings),
        )

    def _get(self, aggregate_id: UUID, kind: str, ident: int) -> Any:
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFoundError(kind, ident) from None

    def get_task(self, task_id: int) -> DeductionTask:
        task = self._get(to_uuid(task_id), "task", task_id)
        if not isinstance(task, DeductionTask):
            raise NotFoundError("task", task_id)
        return task

    def get_execution(self, execution_id: int) -> AgentExecution:
        execution = self._get(to_uuid(execution_id), "agent execution", execution_id)
        if not isinstance(execution, AgentExecution):
            raise NotFoundError("agent execution", execution_id)
        return execution

    def executions_of(self, task: DeductionTask) -> list[AgentExecution]:
        """The task's executions, in its order: read together through `bulk` when set."""
        if self.bulk is None:
            return [self.get_execution(eid) for eid in task.execution_ids]
        found, _ = self.bulk.load([to_uuid(eid) for eid in task.execution_ids], [])
        executions = []
        for eid in task.execution_ids:
            execution = found.get(to_uuid(eid))
            if not isinstance(execution, AgentExecution):
                raise NotFoundError("agent execution", eid)
            executions.append(execution)
        return executions

    # -- catalog -----------------------------------------------------------------------------

    def _create_catalog(self, kind: str, key: int, aggregate: Any) -> Receipt:
        try:
            saved = self._save(aggregate)
        except IntegrityError:
            raise DuplicateError(kind, key) from None
        return Receipt(saved.position, {"id": key}, saved.topics)

    def create_agent_meta(
        self, meta_id: int, name: str, load: str, description: str | None, operator: str
    ) -> Receipt:
        meta = AgentMeta(
            meta_id=meta_id, name=name, load=load, description=description, operator=operator
        )
        return self._create_catalog("agent_meta", meta_id, meta)

    def create_scheme(
        self, scheme_id: int, name: str, config: dict[str, Any], operator: str
    ) -> Receipt:
        scheme = Scheme(scheme_id=scheme_id, name=name, config=config, operator=operator)
        return self._create_catalog("scheme", scheme_id, scheme)

    def create_env_instance(
        self, env_instance_id: int, name: str, config: dict[str, Any], operator: str
    ) -> Receipt:
        env = EnvInstance(
            env_instance_id=env_instance_id, name=name, config=config, operator=operator
        )
        return self._create_catalog("env_instance", env_instance_id, env)

    def _catalog_entry(self, kind: str, field_name: str, key: int) -> Any:
        # Catalog entries have no events after Created, so a loaded entry never goes stale.
        cached = self._catalog_cache.get((kind, key))
        if cached is not None:
            return cached
        try:
            entry: Any = self.repository.get(catalog_id(kind, key))
        except AggregateNotFoundError:
            raise UnknownReferenceError(field_name, key) from None
        if len(self._catalog_cache) < 100_000:
            self._catalog_cache[(kind, key)] = entry
        return entry

    # -- tasks -------------------------------------------------------------------------------

    def create_task(
        self, new: NewTask, operator: str, idempotency_key: str | None = None
    ) -> Receipt:
        """Save a task, its executions and its name claim, and with `idempotency_key` the
        key too, in one save(): a retry with the key gets this first answer back."""
        request_hash = _request_hash(new, operator)
        replayed = self._replay(idempotency_key, request_hash)
        if replayed is not None:
            return replayed
        scheme = self._catalog_entry("scheme", "scheme_id", new.scheme_id)
        env = self._catalog_entry("env_instance", "env_instance_id", new.env_instance_id)
        metas: dict[int, AgentMeta] = {}
        for i, cfg in enumerate(new.agent_configs):
            if cfg.agent_meta_id not in metas:
                metas[cfg.agent_meta_id] = self._catalog_entry(
                    "agent_meta", f"agent_configs[{i}].agent_meta_id", cfg.agent_meta_id
                )
        snapshot = {"id": scheme.scheme_id, "name": scheme.name, "config": scheme.config}
        env_snapshot = {"id": env.env_instance_id, "name": env.name, "config": env.config}
        for _ in range(_COMMAND_ATTEMPTS):
            task_id = new_id()
            execution_ids = [new_id() for _ in new.agent_configs]
            task = DeductionTask(
                task_id=task_id,
                name=new.name,
                description=new.description,
                scheme_id=new.scheme_id,
                env_instance_id=new.env_instance_id,
                scheme_snapshot=snapshot,
                env_snapshot=env_snapshot,
                execution_ids=execution_ids,
                operator=operator,
                priority=new.priority,
            )
            executions = [
                AgentExecution(
                    execution_id=eid,
                    task_id=task_id,
                    seq=seq,
                    agent_meta_id=cfg.agent_meta_id,
                    agent_name=metas[cfg.agent_meta_id].name,
                    agent_load=metas[cfg.agent_meta_id].load,
                    side=cfg.side,
                    params=cfg.params,
                    max_retry=cfg.max_retry,
                    operator=operator,
                )
                for seq, (eid, cfg) in enumerate(zip(execution_ids, new.agent_configs))
            ]
            claim = TaskName(name=new.name, task_id=task_id)
            keys = [IdempotencyKey(idempotency_key, request_hash, task_id, task.status)
                    if idempotency_key else None]  # fmt: skip
            try:
                saved = self._save(task, claim, *executions, *filter(None, keys))
            except IntegrityError:
                replayed = self._replay(idempotency_key, request_hash)
                if replayed is not None:  # the same request, saved meanwhile by another call
                    return replayed
                if self._name_taken(claim.id):
                    raise DuplicateError("task", new.name) from None
                continue  # an id collided with another process's: draw new ids
            return Receipt(
                saved.position,
                {"task_id": task_id, "status": task.status, "create_time": task.created_on},
                saved.topics,
            )
        raise CommandError("could not allocate unique ids for the task")

    def _replay(self, key: str | None, request_hash: str) -> Receipt | None:
        """The first answer to the request saved under `key`; None when the key is new."""
        if key is None:
            return None
        try:
            saved: IdempotencyKey = self.repository.get(IdempotencyKey.create_id(key))
        except AggregateNotFoundError:
            return None
        if saved.request_hash != request_hash:
            raise IdempotencyKeyReusedError(key)
        task = self.get_task(saved.task_id)
        # Its events are at or below the store's head: waiting for that reads them back.
        head = self.recorder.max_notification_id() or 0
        return Receipt(
            head, {"task_id": task.task_id, "status": saved.status, "create_time": task.created_on}
        )

    def _name_taken(self, claim_id: UUID) -> bool:
        try:
            self.repository.get(claim_id)
        except AggregateNotFoundError:
            return False
        return True

    def request_stop(self, task_id: int, operator: str) -> Receipt:
        def command() -> Receipt:
            task = self.get_task(task_id)
            if not task.request_stop(operator):
                return Receipt(0, {"task_id": task_id, "status": task.status, "changed": False})
            executions = self.executions_of(task)
            for execution in executions:
                if not execution.is_ended:
                    execution.change_status("stopped", operator)
            saved = self._save(task, *executions)
            return Receipt(
                saved.position,
                {"task_id": task_id, "status": task.status, "changed": True},
                saved.topics,
            )

        return retry_on_conflict(command)

    def raise_priority(self, task_id: int, priority: str, operator: str) -> Receipt:
        """Move a queued task ahead in the admission order (PriorityRaised, in its history)."""

        def command() -> Receipt:
            task = self.get_task(task_id)
            data = {"task_id": task_id, "priority": task.priority, "changed": False}
            if not task.raise_priority(priority, operator):
                return Receipt(0, data)
            saved = self._save(task)
            data.update(priority=task.priority, changed=True)
            return Receipt(saved.position, data, saved.topics)

        return retry_on_conflict(command)

    def sample_engine_load(
        self, engine_url: str, cpu: float | None, memory: float | None, policy: SamplePolicy
    ) -> int:
        """Record the Engine's load when the policy says it is news; the position saved (0:
        nothing recorded; a sampler in another process that won the race is as good)."""
        try:
            load: EngineLoad = self.repository.get(EngineLoad.create_id(engine_url))
        except AggregateNotFoundError:
            load = EngineLoad(engine_url)
        if not load.sample(cpu, memory, utc_now(), policy):
            return 0
        try:
            return self._save(load).position
        except IntegrityError:
            return 0

    def update_config(
        self, task_id: int, changes: Iterable[tuple[int, Mapping[str, Any]]], operator: str
    ) -> Receipt:
        """Merge new params into the named executions; record what the Engine must be told."""
        changes = list(changes)

        def command() -> Receipt:
            task = self.get_task(task_id)
            if task.is_ended:
                task.request_update(0, [], operator)  # raises TaskAlreadyEndedError
            touched: dict[int, AgentExecution] = {}
            for i, (execution_id, params) in enumerate(changes):
                if execution_id not in task.execution_ids:
                    raise UnknownReferenceError(
                        f"agent_configs[{i}].agent_execution_id",
                        execution_id,
                        f"is not an agent execution of task {task_id}",
                    )
                execution = touched.get(execution_id) or self.get_execution(execution_id)
                execution.update_params(dict(params), operator)
                touched[execution_id] = execution
            delivered = [
                {
                    "execution_id": e.execution_id,
                    "engine_agent_id": e.engine_agent_id,
                    "seq": e.seq,
                    "params": e.params,
                }
                for e in touched.values()
            ]
            if any(e.pending_events for e in touched.values()):
                task.request_update(new_id(), delivered, operator)
            saved = self._save(task, *touched.values())
            return Receipt(saved.position, {"updated_count": len(touched)}, saved.topics)

        return retry_on_conflict(command)


def _request_hash(new: NewTask, operator: str) -> str:
    # A default priority is left out, so keys saved before priorities existed still match.
    fields: Any = dataclasses.asdict(new)
    if new.priority == DEFAULT_PRIORITY:
        del fields["priority"]
    body = msgspec_json.encode([operator, fields], order="sorted")
    return hashlib.sha256(body).hexdigest()
