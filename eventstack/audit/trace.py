"""A request's trace: every event one correlation id caused, across services, in causal order.

Two sources, merged by `event_id`: the archive (query `trace.sql` over the `events` relation, through
a QueryEngine) and the live event stores (eventstack.audit.live), which hold what Firehose has not
delivered yet. An event in both is one entry with source "both"; the store's copy is the envelope
shown (the store is the source of truth), the archive's gives `archived_at`.

The order (`causal_order`), exactly:

1. An event whose `metadata.causation_id` is the `event_id` of another event of the trace is a
   child of that event: it comes after its parent, and after the parent's earlier children and
   their descendants (depth-first), with `depth` = its parent's depth + 1.
2. Every other event is a root (`depth` 0). Today every event is one: the API sets `causation_id`
   to the API Gateway request id of the command (escore.http), not to an event id, because no
   service issues commands from events yet. Events of one request share that causation id.
3. Roots, and the children of one parent, are ordered by `occurred_at` (the contract's fixed RFC 3339
   UTC microsecond format, so text order is time order), then `stream_id`, then `version`, then
   `event_id`. Events of one append share `occurred_at`; their versions order them.
4. A causation cycle (impossible for ids made by uuid4, but data is data) is broken where the
   order of rule 3 first reaches it: that event is taken as a root.

`trace(...)` is what `eventstack trace` and the local web UI call.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from escore.envelope import Envelope, EnvelopeError, format_timestamp, from_dict
from eventstack import sql
from eventstack.audit import live
from eventstack.audit.engine import ProgressFn, QueryEngine
from eventstack.resources import Resources

Source = Literal["archive", "store", "both"]


class ArchiveUnavailable(RuntimeError):
    """The archive cannot be queried (engine failed, bucket or Athena unreachable)."""


@dataclass
class TraceEntry:
    event_id: str
    causation_id: str | None
    service: str
    stream_id: str
    version: int
    type: str
    occurred_at: str
    archived_at: str | None  # None: not archived yet
    source: Source
    depth: int
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Trace:
    correlation_id: str
    entries: list[TraceEntry]
    # archived, stored, both (event counts), store_items_scanned, store_read_units (the Scan's cost),
    # stores_not_in_stage (services not searched: the stage lists no event store for them), seconds
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"correlation_id": self.correlation_id, "entries": [e.to_json() for e in self.entries]}


@dataclass(frozen=True)
class Sourced:
    """One event after the merge: its envelope, when it was archived, where it was found."""

    envelope: Envelope
    archived_at: str | None
    source: Source


def trace(correlation_id: str, *, engine: QueryEngine | None, dynamodb: Any, resources: Resources,
          progress: ProgressFn | None = None) -> Trace:
    """Every event of `correlation_id`, archive (None: stores only) and stores merged, in causal order.

    Raises ArchiveUnavailable or live.StoreUnavailable when a source cannot be read."""
    started = time.monotonic()
    archived = archived_events(engine, "trace", {"correlation_id": correlation_id}, progress) if engine else []
    scanned = live.by_correlation(correlation_id, dynamodb, resources)
    merged = merge(archived, scanned.events)
    entries = causal_order(entry_of(event) for event in merged)
    stats = {
        "archived": sum(1 for e in merged if e.source != "store"),
        "stored": sum(1 for e in merged if e.source != "archive"),
        "both": sum(1 for e in merged if e.source == "both"),
        "store_items_scanned": scanned.items_scanned,
        "store_read_units": round(scanned.read_units, 1),
        "stores_not_in_stage": scanned.not_in_stage,
        "seconds": round(time.monotonic() - started, 3),
    }
    return Trace(correlation_id, entries, stats)


# the archive's rows
def archived_events(engine: QueryEngine, query: str, params: dict[str, Any],
                    progress: ProgressFn | None = None) -> list[tuple[Envelope, str | None]]:
    """Run `<query>.sql` on `engine`: each row as (envelope, archived_at)."""
    try:
        result = engine.query(sql.source(query), params, dialect=sql.SOURCE_DIALECT, progress=progress)
    except Exception as exc:  # any engine's failure (S3, Athena, DuckDB): one line for the caller
        raise ArchiveUnavailable(f"the archive cannot be queried ({engine.name}): {_first_line(exc)}") from None
    rows: list[tuple[Envelope, str | None]] = []
    for record in result.records():
        envelope = envelope_of_row(record)
        if envelope is not None:
            rows.append((envelope, timestamp_text(record.get("archived_at"))))
    return rows


def envelope_of_row(record: dict[str, Any]) -> Envelope | None:
    """An `events` row as an envelope (data and metadata are JSON text there); None if it is not one."""
    raw: dict[str, Any] = {name: record.get(name) for name in
                           ("event_id", "stream_id", "version", "type", "schema_version", "service", "occurred_at")}
    for name in ("version", "schema_version"):
        value = raw[name]
        if isinstance(value, str) and value.isdigit():
            raw[name] = int(value)  # an engine that answers a column as text
    for name in ("data", "metadata"):
        value = record.get(name)
        try:
            raw[name] = orjson.loads(value) if isinstance(value, str | bytes) else value
        except orjson.JSONDecodeError:
            return None
    raw["occurred_at"] = timestamp_text(raw["occurred_at"])
    try:
        return from_dict(raw)
    except EnvelopeError:
        return None


def timestamp_text(value: Any) -> str | None:
    """A timestamp column as RFC 3339 UTC text (an engine may give a datetime or a string)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return format_timestamp(value if value.tzinfo else value.replace(tzinfo=UTC))
    return str(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# merging and ordering
def merge(archived: Iterable[tuple[Envelope, str | None]], stored: Iterable[Envelope]) -> list[Sourced]:
    """One event per event_id: the archive's first copy (duplicates dropped), the store's envelope where
    it has one."""
    by_id: dict[str, Sourced] = {}
    for envelope, archived_at in archived:
        if envelope.event_id not in by_id:
            by_id[envelope.event_id] = Sourced(envelope, archived_at, "archive")
    for envelope in stored:
        seen = by_id.get(envelope.event_id)
        by_id[envelope.event_id] = Sourced(envelope, seen.archived_at if seen else None,
                                           "both" if seen else "store")
    return list(by_id.values())


def entry_of(event: Sourced) -> TraceEntry:
    envelope = event.envelope
    causation = envelope.metadata.get("causation_id")
    return TraceEntry(
        event_id=envelope.event_id,
        causation_id=causation if isinstance(causation, str) else None,
        service=envelope.service,
        stream_id=envelope.stream_id,
        version=envelope.version,
        type=envelope.type,
        occurred_at=envelope.occurred_at,
        archived_at=event.archived_at,
        source=event.source,
        depth=0,
        data=envelope.data,
    )


def _time_order(entry: TraceEntry) -> tuple[str, str, int, str]:
    return (entry.occurred_at, entry.stream_id, entry.version, entry.event_id)


def causal_order(entries: Iterable[TraceEntry]) -> list[TraceEntry]:
    """Parents before children, depth-first; siblings and roots by time (the module's docstring)."""
    pending = list(entries)
    by_id = {entry.event_id: entry for entry in pending}
    children: dict[str, list[TraceEntry]] = defaultdict(list)
    roots: list[TraceEntry] = []
    for entry in pending:
        parent = entry.causation_id
        if parent is not None and parent in by_id and parent != entry.event_id:
            children[parent].append(entry)
        else:
            roots.append(entry)
    ordered: list[TraceEntry] = []
    placed: set[str] = set()

    def walk(root: TraceEntry) -> None:
        stack = [(root, 0)]  # iterative: a long causal chain must not hit the recursion limit
        while stack:
            entry, depth = stack.pop()
            if entry.event_id in placed:
                continue
            placed.add(entry.event_id)
            entry.depth = depth
            ordered.append(entry)
            for child in sorted(children.get(entry.event_id, ()), key=_time_order, reverse=True):
                stack.append((child, depth + 1))

    for root in sorted(roots, key=_time_order):
        walk(root)
    for entry in sorted(pending, key=_time_order):  # only events on a causation cycle are left
        if entry.event_id not in placed:
            walk(entry)
    return ordered
