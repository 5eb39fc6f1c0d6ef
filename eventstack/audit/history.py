"""A stream's history: its events, and its aggregate's state folded as of an instant.

The owner of a stream is found from its id: each service's aggregates (`<service>.domain`, named by
escore.naming.domain_module) declare their `stream_prefix`, and a stream id is `<prefix>-<id>`
(escore.aggregate.Aggregate.stream_id_for). An id no aggregate claims is an unknown stream.

Events come from the archive (query `history.sql`) and the owning service's event store, merged by
`event_id` (eventstack.audit.trace.merge: the store's envelope where it has one), in version order.
As of T means the stream's events in version order up to the first whose `occurred_at` is after T
(a stream's versions are appended in time order, so that is every event with occurred_at <= T). With
no T, all of them.

The fold is the API's own: a `ServiceApp` of the owning service (its contract, so the same upcast
steps) on an in-memory store holding those events, and its `repository(Aggregate).load(id)`, the
code `GET /posts/{id}` runs on the DynamoDB store. Events are listed as stored (their
`schema_version` and `data` as written); the state is folded from them upcast, as the API reads them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from escore import naming
from escore.aggregate import Aggregate
from escore.contract import EventContract, SchemaTooNew
from escore.envelope import Envelope, format_timestamp, parse_timestamp
from eventstack.archive_layout import parse_time
from eventstack.audit import live
from eventstack.audit.engine import ProgressFn, QueryEngine
from eventstack.audit.trace import Source, Sourced, archived_events, merge
from eventstack.loader import import_lambda_module
from eventstack.resources import Resources
from eventstack.topology import TOPOLOGY, Topology


class HistoryError(ValueError):
    """A history that cannot be told: an unknown stream, a bad instant, a stream with a gap."""


@dataclass(frozen=True)
class Owner:
    service: str
    aggregate: type[Aggregate]
    contract: EventContract
    aggregate_id: str


@dataclass
class HistoryEntry:
    event_id: str
    version: int
    type: str
    schema_version: int
    occurred_at: str
    archived_at: str | None  # None: not archived yet
    source: Source
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class History:
    stream_id: str
    service: str
    at: str | None  # the instant asked for (RFC 3339 UTC), None: now
    events: list[HistoryEntry]  # the events folded: all of them as of `at`
    state: dict[str, Any] | None  # None: the aggregate did not exist yet at `at`
    later: int = 0  # events after `at` (not folded, not listed)

    def to_json(self) -> dict[str, Any]:
        return {"stream_id": self.stream_id, "at": self.at, "events": [e.to_json() for e in self.events],
                "state": self.state}


@functools.cache
def aggregates(topology: Topology = TOPOLOGY) -> tuple[tuple[str, type[Aggregate]], ...]:
    """(service, aggregate class) for every aggregate of every service's domain module."""
    found: list[tuple[str, type[Aggregate]]] = []
    for service in topology.services:
        try:
            module = import_lambda_module(naming.domain_module(service.name))
        except ModuleNotFoundError:
            continue  # a service with no aggregate of its own
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, Aggregate) and value is not Aggregate
                    and value.__module__ == module.__name__ and getattr(value, "stream_prefix", None)):
                found.append((service.name, value))
    return tuple(found)


def owner_of(stream_id: str, topology: Topology = TOPOLOGY) -> Owner:
    """The service and aggregate a stream id belongs to; HistoryError for an id none claims."""
    for service, aggregate in aggregates(topology):
        prefix = aggregate.stream_id_for("")
        if stream_id.startswith(prefix) and len(stream_id) > len(prefix):
            contract = import_lambda_module(topology.service(service).contract_module).EVENTS
            return Owner(service, aggregate, contract, stream_id[len(prefix):])
    known = ", ".join(f"{a.stream_id_for('<id>')} ({s})" for s, a in aggregates(topology))
    raise HistoryError(f"unknown stream {stream_id!r}: no service's aggregate has it (known: {known})")


def instant(text: str | None) -> datetime | None:
    """--at as a moment (RFC 3339, or a prefix of it such as 2026-11-26; naive means UTC)."""
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise HistoryError(f"--at: {exc}") from None


def history(stream_id: str, *, at: str | datetime | None = None, engine: QueryEngine | None,
            dynamodb: Any, resources: Resources, progress: ProgressFn | None = None,
            topology: Topology = TOPOLOGY) -> History:
    """The stream's events and state as of `at` (archive, None: stores only; and its store).

    Raises HistoryError, trace.ArchiveUnavailable or live.StoreUnavailable."""
    owner = owner_of(stream_id, topology)
    moment = instant(at) if isinstance(at, str | None) else at
    archived = archived_events(engine, "history", {"stream_id": stream_id}, progress) if engine else []
    archived = [(e, when) for e, when in archived if e.stream_id == stream_id]
    stored = live.by_stream(stream_id, owner.service, dynamodb, resources)
    return fold(stream_id, owner, merge(archived, stored), moment)


def fold(stream_id: str, owner: Owner, events: Iterable[Sourced], moment: datetime | None) -> History:
    """The events as of `moment` and the aggregate folded from them by the API's repository."""
    ordered = in_versions(stream_id, events)
    kept = ordered if moment is None else _until(ordered, moment)
    state = state_of(owner, [e.envelope for e in kept]) if kept else None
    return History(
        stream_id=stream_id,
        service=owner.service,
        at=_rfc3339(moment) if moment is not None else None,
        events=[_entry(e) for e in kept],
        state=state,
        later=len(ordered) - len(kept),
    )


def in_versions(stream_id: str, events: Iterable[Sourced]) -> list[Sourced]:
    """Version order, one event a version (1, 2, 3 ... with no gap), else HistoryError."""
    by_version: dict[int, Sourced] = {}
    for event in events:
        held = by_version.get(event.envelope.version)
        if held is None or (held.source == "archive" and event.source != "archive"):
            by_version[event.envelope.version] = event  # the store's copy is the truth
    ordered = [by_version[v] for v in sorted(by_version)]
    for expected, event in enumerate(ordered, start=1):
        if event.envelope.version != expected:
            raise HistoryError(f"stream {stream_id}: version {expected} is in neither the archive nor the store")
    return ordered


def state_of(owner: Owner, envelopes: list[Envelope]) -> dict[str, Any]:
    """Fold `envelopes` (as stored) with the service's API code: ServiceApp's repository on a memory store."""
    from escore.app import ServiceApp
    from escore.memory_store import InMemoryEventStore

    store = InMemoryEventStore(owner.contract.registry)  # upcasts on read, as the API's DynamoDB store does
    for envelope in envelopes:  # one at a time: an append is capped at one transaction's items
        store.append(envelope.stream_id, envelope.version - 1, [envelope])
    app = ServiceApp({}, owner.contract, store=store, snapshot_every=0)
    try:
        aggregate = app.repository(owner.aggregate).load(owner.aggregate_id)
    except SchemaTooNew as exc:
        raise HistoryError(f"an event is newer than this code reads: {exc}") from None
    return {"id": aggregate.id, "version": aggregate.version, "created_at": aggregate.created_at,
            "updated_at": aggregate.updated_at, **aggregate.state()}


def _until(ordered: list[Sourced], moment: datetime) -> list[Sourced]:
    kept: list[Sourced] = []
    for event in ordered:
        if parse_timestamp(event.envelope.occurred_at) > moment:
            break
        kept.append(event)
    return kept


def _entry(event: Sourced) -> HistoryEntry:
    envelope = event.envelope
    return HistoryEntry(envelope.event_id, envelope.version, envelope.type, envelope.schema_version,
                        envelope.occurred_at, event.archived_at, event.source, envelope.data)


def _rfc3339(moment: datetime) -> str:
    return format_timestamp(moment)
