"""The platform catalog that tasks refer to: agent metas, schemes and environment instances."""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event


def catalog_id(kind: str, key: int) -> UUID:
    """Aggregate id of a catalog entry; kinds have separate id spaces."""
    return uuid5(NAMESPACE_URL, f"deduction:{kind}:{key}")


class AgentMeta(Aggregate):
    """An agent the Engine can load: task creation copies its name and load name."""

    class Created(Aggregate.Created):
        meta_id: int
        name: str
        load: str
        description: str | None
        operator: str

    @staticmethod
    def create_id(meta_id: int) -> UUID:
        return catalog_id("agent_meta", meta_id)

    @event(Created)
    def __init__(
        self, meta_id: int, name: str, load: str, description: str | None, operator: str
    ) -> None:
        self.meta_id, self.name, self.load, self.description = meta_id, name, load, description


class Scheme(Aggregate):
    """A scheme (plan of the exercise): a task stores a snapshot of it."""

    class Created(Aggregate.Created):
        scheme_id: int
        name: str
        config: dict[str, Any]
        operator: str

    @staticmethod
    def create_id(scheme_id: int) -> UUID:
        return catalog_id("scheme", scheme_id)

    @event(Created)
    def __init__(self, scheme_id: int, name: str, config: dict[str, Any], operator: str) -> None:
        self.scheme_id, self.name, self.config = scheme_id, name, config


class EnvInstance(Aggregate):
    """An environment instance the Engine runs the exercise in."""

    class Created(Aggregate.Created):
        env_instance_id: int
        name: str
        config: dict[str, Any]
        operator: str

    @staticmethod
    def create_id(env_instance_id: int) -> UUID:
        return catalog_id("env_instance", env_instance_id)

    @event(Created)
    def __init__(
        self, env_instance_id: int, name: str, config: dict[str, Any], operator: str
    ) -> None:
        self.env_instance_id, self.name, self.config = env_instance_id, name, config
