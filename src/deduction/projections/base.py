"""What every read model shares: the event rows it reads, the upsert it writes, query helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import cache, lru_cache
from typing import Any, ClassVar, NamedTuple

from eventsourcing.utils import get_topic
from psycopg import AsyncConnection, AsyncRawCursor, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from deduction.application.transcoder import decode_state

EVENTS_TABLE = "deduction_events"  # the eventsourcing table of the "Deduction" application
Row = dict[str, Any]
Query = str | sql.SQL | sql.Composed


class EventRow(NamedTuple):
    """One stored event as a projection sees it: decoded JSON, no domain objects (a named
    tuple: built for every event a projection or an as-of read folds, three times faster than
    a frozen dataclass)."""

    notification_id: int
    originator_int: int
    version: int
    name: str  # "DeductionTask.StatusChanged"
    state: dict[str, Any]
    timestamp: datetime


def event_row(r: tuple[Any, ...], topics: dict[str, str]) -> EventRow:
    """A stored event row (notification_id, originator_id, version, topic, state), decoded."""
    state = decode_state(r[4])
    return EventRow(
        notification_id=r[0],
        originator_int=r[1].int,
        version=r[2],
        name=topics[r[3]],
        state=state,
        timestamp=datetime.fromisoformat(state["timestamp"]),
    )


def topic_names(*event_classes: type) -> dict[str, str]:
    """Stored topic -> short name ("Aggregate.Event") for the given event classes."""
    return {get_topic(c): get_topic(c).partition(":")[2] for c in event_classes}


class Projection:
    """Base of the read models: subclasses set the class attributes and `apply`."""

    name: ClassVar[str]
    ddl: ClassVar[Sequence[str]]
    tables: ClassVar[Sequence[str]]
    events: ClassVar[Sequence[type]]

    @classmethod
    def topics(cls) -> dict[str, str]:
        return topic_names(*cls.events)

    async def apply(self, conn: AsyncConnection[Any], events: list[EventRow]) -> None:
        raise NotImplementedError


@cache
def _fetch_rows_sql(table: str) -> str:
    # Rendered once per table: composing it per page cost more CPU than sending it.
    return sql.SQL("SELECT * FROM {} WHERE id = ANY(%s)").format(sql.Identifier(table)).as_string()


async def fetch_rows(conn: AsyncConnection[Any], table: str, ids: Iterable[int]) -> dict[int, Row]:
    wanted = list(ids)
    if not wanted:
        return {}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_fetch_rows_sql(table), [wanted])
        return {row["id"]: row async for row in cur}


async def fetch_all(conn: AsyncConnection[Any], query: Query, params: Any = None) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def fetch_scalar(conn: AsyncConnection[Any], query: Query, params: Any = None) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return None if row is None else row[0]


def json_fields(alias: str, columns: Sequence[str], time_columns: frozenset[str]) -> sql.Composable:
    """`'name', alias.name, ...` for json_build_object, times in the API's RFC 3339 shape."""
    parts: list[sql.Composable] = []
    for name in columns:
        column: sql.Composable = sql.SQL("{}.{}").format(
            sql.Identifier(alias), sql.Identifier(name)
        )
        if name in time_columns:
            column = sql.SQL(
                "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
            ).format(column)
        parts.append(sql.SQL("{}, {}").format(sql.Literal(name), column))
    return sql.SQL(", ").join(parts)


INSERT_ROWS = 500  # rows per statement: 500 x the widest table's columns stays far below 65,535


async def insert_rows(
    conn: AsyncConnection[Any], head: str, rows: Sequence[Sequence[Any]], tail: str = ""
) -> None:
    """`head VALUES (...), (...) tail`: one multi-row statement per INSERT_ROWS rows (an
    executemany, a statement per row in a pipeline, cost several times the CPU per page).
    Written with PostgreSQL's own $n placeholders: psycopg parses a `%s` statement of over
    50 parameters again on every call."""
    async with AsyncRawCursor(conn) as cur:
        for start in range(0, len(rows), INSERT_ROWS):
            chunk = rows[start : start + INSERT_ROWS]
            query = _values_sql(head, len(chunk[0]), len(chunk), tail)
            await cur.execute(query, [v for r in chunk for v in r])


@lru_cache(maxsize=512)
def _values_sql(head: str, width: int, count: int, tail: str) -> str:
    rows = (
        f"({', '.join(f'${n}' for n in range(first, first + width))})"
        for first in range(1, width * count + 1, width)
    )
    return f"{head} VALUES {', '.join(rows)}{tail}"


async def upsert(
    conn: AsyncConnection[Any],
    table: str,
    columns: Sequence[str],
    json_columns: frozenset[str],
    rows: Iterable[Row],
) -> None:
    """INSERT ... ON CONFLICT (id) DO UPDATE for whole rows."""
    params = [
        [Jsonb(r[c]) if c in json_columns and r[c] is not None else r[c] for c in columns]
        for r in rows
    ]
    head, tail = _upsert_sql(table, tuple(columns))
    await insert_rows(conn, head, params, tail)


@cache
def _upsert_sql(table: str, columns: tuple[str, ...]) -> tuple[str, str]:
    """The statement's head and tail, rendered once per table and column list (composing
    them per page cost more CPU than sending the statement)."""
    head = sql.SQL("INSERT INTO {table} ({cols})").format(
        table=sql.Identifier(table), cols=sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    sets = sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in columns if c != "id"
    )
    tail = sql.SQL(" ON CONFLICT (id) DO UPDATE SET {}").format(sets)
    return head.as_string(), tail.as_string()


Handler = Callable[[Row, EventRow], None]


class RowProjection(Projection):
    """A projection with one row per aggregate, folded in memory and upserted per page."""

    table: ClassVar[str]
    columns: ClassVar[Sequence[str]]
    json_columns: ClassVar[frozenset[str]] = frozenset()
    id_field: ClassVar[str]

    def handlers(self) -> dict[str, Handler]:
        raise NotImplementedError

    def create_row(self, event: EventRow) -> Row:
        raise NotImplementedError

    async def apply(self, conn: AsyncConnection[Any], events: list[EventRow]) -> None:
        rows = await fetch_rows(conn, self.table, stored_rows_needed(events))
        changed = self.fold(rows, events)
        await upsert(conn, self.table, self.columns, self.json_columns, changed.values())

    def fold(self, rows: dict[int, Row], events: Iterable[EventRow]) -> dict[int, Row]:
        """Apply events to rows in memory (the live table and state-as-of share this);
        returns the rows changed."""
        handlers = self.handlers()
        changed: dict[int, Row] = {}
        row: Row | None
        for e in events:
            if e.name.endswith(".Created"):
                row = self.create_row(e)
                rows[row["id"]] = row
            else:
                found = rows.get(e.originator_int)
                if found is None:
                    continue  # cannot happen for a consistent store; never invent a row
                row = found
                handlers[e.name](row, e)
            row["update_at"], row["version"] = e.timestamp, e.version
            row["position"] = e.notification_id  # what a stream resumed after P asks for
            changed[row["id"]] = row
        return changed


def stored_rows_needed(events: Iterable[EventRow]) -> list[int]:
    """The aggregates whose stored row a fold of `events` starts from: not those whose first
    event here is their Created, which makes the row anew (a create's page reads nothing)."""
    first: dict[int, bool] = {}
    for e in events:
        if e.originator_int not in first:
            first[e.originator_int] = e.name.endswith(".Created")
    return [key for key, created in first.items() if not created]


def copy(**fields: object) -> Handler:
    """A handler setting row columns: "$name" copies that event field, anything else is a constant."""

    def handler(row: Row, e: EventRow) -> None:
        for column, source in fields.items():
            if isinstance(source, str) and source.startswith("$"):
                row[column] = e.state[source[1:]]
            else:
                row[column] = source

    return handler


def add(column: str, delta: int) -> Handler:
    def handler(row: Row, e: EventRow) -> None:
        row[column] += delta

    return handler
