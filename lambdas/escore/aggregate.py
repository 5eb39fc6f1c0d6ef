"""Aggregates and the repository that loads and saves them through an EventStore.

An aggregate is pure: its state is a fold over its events (`apply`, one case per event type),
and a command is a method that checks the invariants against that state and returns the new
events, or raises a `DomainError`. It does no I/O, reads no clock and makes no ids.

The `Repository` does the I/O: it folds an aggregate from its stream (from a snapshot when
there is one), and saves the events a command decided as envelopes (docs/api.md, "The event envelope") with
`store.append(stream_id, expected_version, ...)`, so two writers racing on one aggregate
cannot both win. Uniqueness claims and the idempotency record of the request go in the same
atomic append.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, cast

from escore.envelope import Envelope, new_id, utc_now
from escore.observability import logger
from escore.store import (
    Claim,
    ConcurrencyError,
    EventStore,
    IdempotencyCompletion,
    IdempotencyRecord,
    Snapshot,
)
from escore.upcasting import Step


class DomainEvent:
    """Base of an aggregate's events: frozen dataclasses whose fields are the event's `data`.

    `schema_version` is the schema this code writes and reads; `upcasts[n]` turns the data of
    schema n into n + 1 (escore.contract gathers a service's events and their steps)."""

    type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    upcasts: ClassVar[Mapping[int, Step]] = {}

    def to_data(self) -> dict[str, Any]:
        fields: dict[str, Any] = dataclasses.asdict(cast(Any, self))
        return fields

    # Data keys that are no field but that an instance keeps (in its `__dict__`) when decoded by the
    # fast constructor, for a property to read instead of recomputing them (posts' `tags`).
    stored_extras: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> DomainEvent:
        # Keep only the fields this code knows: a field added later never breaks an old reader.
        return constructor_of(cls)(data)  # (cached: replay decodes every event of the archive through here)

    @classmethod
    def from_data_checked(cls, data: Mapping[str, Any]) -> DomainEvent:
        """`from_data` through the class's `__init__` always (what the fast constructor must equal)."""
        names = _field_names(cls)
        if names.issuperset(data):
            return cls(**data)
        return cls(**{name: value for name, value in data.items() if name in names})


_FIELD_NAMES: dict[type, frozenset[str]] = {}
_CONSTRUCTORS: dict[type, Callable[[Mapping[str, Any]], DomainEvent]] = {}


def constructor_of(cls: type[DomainEvent]) -> Callable[[Mapping[str, Any]], DomainEvent]:
    """`cls.from_data` as a function, made once per class (see `_constructor`)."""
    constructor = _CONSTRUCTORS.get(cls)
    if constructor is None:
        constructor = _CONSTRUCTORS[cls] = _constructor(cls)
    return constructor


def _constructor(cls: type[DomainEvent]) -> Callable[[Mapping[str, Any]], DomainEvent]:
    """The per-class decoder of `from_data`. For a plain frozen dataclass (no `__post_init__`, no
    slots, no factory defaults, every field in `__init__`), whose generated `__init__` only stores
    its arguments, it fills the instance's `__dict__` directly: the defaults, then the data (the
    stored extras kept, other unknown keys dropped), about a fifth of the cost of `cls(**data)`.
    Data lacking a required field goes through `__init__` (its TypeError). Anything else: `__init__`."""
    checked = cls.from_data_checked
    fields: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(cast(Any, cls)) if dataclasses.is_dataclass(cls) else ()
    plain = (bool(fields) and not hasattr(cls, "__post_init__") and not hasattr(cls, "__slots__")
             and all(f.init and f.default_factory is dataclasses.MISSING for f in fields))
    if not plain:
        return checked
    names = _field_names(cls)
    keep = names | cls.stored_extras
    required = frozenset(f.name for f in fields if f.default is dataclasses.MISSING)
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    new = object.__new__

    def construct(data: Mapping[str, Any]) -> DomainEvent:
        if not required.issubset(data):
            return checked(data)
        if not keep.issuperset(data):
            data = {name: value for name, value in data.items() if name in keep}
        event = new(cls)
        attributes = event.__dict__
        if defaults:
            attributes.update(defaults)
        attributes.update(data)
        return event

    return construct


def _field_names(cls: type) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cast(Any, cls)))
    return names


class DomainError(Exception):
    """A command refused by the domain: the client's request, not a fault."""


class AggregateNotFound(DomainError):
    def __init__(self, kind: str, aggregate_id: str):
        self.kind = kind
        self.aggregate_id = aggregate_id
        super().__init__(f"{kind} {aggregate_id} not found")


class VersionConflict(DomainError):
    """The aggregate is not at the version the command expected, or is in a state that forbids it."""

    def __init__(self, message: str, current_version: int):
        self.current_version = current_version
        super().__init__(message)


class Aggregate:
    """State folded from events. Subclasses set `stream_prefix`, `event_types` and `apply`."""

    stream_prefix: ClassVar[str]
    event_types: ClassVar[tuple[type[DomainEvent], ...]]
    # Bump when the snapshot's shape changes: older snapshots are then ignored, not misread.
    snapshot_schema: ClassVar[int] = 1

    def __init__(self, aggregate_id: str) -> None:
        self.id = aggregate_id
        self.version = 0
        self.created_at: str | None = None  # occurred_at of the first event
        self.updated_at: str | None = None  # occurred_at of the latest event

    @classmethod
    def stream_id_for(cls, aggregate_id: str) -> str:
        return f"{cls.stream_prefix}-{aggregate_id}"

    @property
    def stream_id(self) -> str:
        return self.stream_id_for(self.id)

    @property
    def exists(self) -> bool:
        return self.version > 0

    def apply(self, event: DomainEvent) -> None:
        """Fold one event into the state. Pure; never raises for a valid history."""
        raise NotImplementedError

    def mutate(self, event: DomainEvent, occurred_at: str) -> None:
        """Apply an event that is now part of the stream (the repository calls this)."""
        self.apply(event)
        self.version += 1
        self.created_at = self.created_at or occurred_at
        self.updated_at = occurred_at

    def skip(self, occurred_at: str) -> None:
        """Count an event of a type this code does not know: readers skip it, versions still count."""
        self.version += 1
        self.created_at = self.created_at or occurred_at
        self.updated_at = occurred_at

    def require_version(self, expected_version: int | None) -> None:
        """Optimistic concurrency of the client: the command was decided on `expected_version`."""
        if expected_version is not None and expected_version != self.version:
            raise VersionConflict(
                f"expected version {expected_version}, current version is {self.version}", self.version
            )

    # snapshots: the folded state, so a long stream need not be read from its start
    def state(self) -> dict[str, Any]:
        """The fields `apply` maintains, as JSON; subclasses extend."""
        return {}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of `state`."""

    def to_snapshot(self) -> Snapshot:
        return Snapshot(
            self.stream_id,
            self.version,
            {
                "schema": self.snapshot_schema,
                "id": self.id,
                "created_at": self.created_at,
                "updated_at": self.updated_at,
                "state": self.state(),
            },
        )

    @classmethod
    def event_class(cls, event_type: str) -> type[DomainEvent] | None:
        for event_class in cls.event_types:
            if event_class.type == event_type:
                return event_class
        return None


A = TypeVar("A", bound=Aggregate)


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_uuid(text: str, kind: str) -> str:
    """An aggregate id from a path, which must be the canonical form ids are given out in (lower-case
    hex, hyphenated, nothing around it); anything else is AggregateNotFound (no such thing). Only one
    spelling names a resource, so the idempotency scope (method and path) is one per resource too."""
    if not _CANONICAL_UUID.fullmatch(text):
        raise AggregateNotFound(kind, text)
    return text


@dataclass
class CommandContext:
    """Where a command comes from: what goes into its events' metadata, and its idempotency.

    `reservation` is the idempotency record held for this request (escore.http reserves it);
    the repository completes it in the same atomic append as the events, with the answer
    `{"status_code": success_status, "body": ...}`, and sets `idempotency_stored`.
    """

    correlation_id: str
    causation_id: str | None = None
    idempotency_key: str | None = None
    reservation: IdempotencyRecord | None = None
    success_status: int = 200
    idempotency_stored: bool = False

    def metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {"correlation_id": self.correlation_id}
        if self.causation_id:
            metadata["causation_id"] = self.causation_id
        if self.idempotency_key:
            metadata["idempotency_key"] = self.idempotency_key
        return metadata


Answer = Callable[[int], dict[str, Any]]


class Repository(Generic[A]):
    """Loads aggregates of one type from an EventStore and appends the events their commands decide.

    `snapshot_every=N` (0 = never) saves a snapshot whenever a save crosses a multiple of N,
    and loads start from the latest snapshot. Snapshots are stored apart from events
    (store.save_snapshot), so saving one never conflicts with an append; a failed snapshot
    write is logged and ignored, since the events alone are the truth.
    """

    def __init__(
        self,
        store: EventStore,
        aggregate_type: type[A],
        service: str,
        *,
        snapshot_every: int = 0,
        clock: Callable[[], str] = utc_now,
        ids: Callable[[], str] = new_id,
    ) -> None:
        if snapshot_every < 0:
            raise ValueError("snapshot_every must be >= 0")
        self.store = store
        self.aggregate_type = aggregate_type
        self.service = service
        self.snapshot_every = snapshot_every
        self.clock = clock
        self.ids = ids

    def load(self, aggregate_id: str) -> A:
        """The aggregate folded from its stream; `exists` is False for a stream with no events."""
        aggregate = self.aggregate_type(aggregate_id)
        if self.snapshot_every:
            self._restore(aggregate)
        for envelope in self.store.read(aggregate.stream_id, aggregate.version + 1):
            self._fold(aggregate, envelope)
        return aggregate

    def get(self, aggregate_id: str, kind: str) -> A:
        """The aggregate, or AggregateNotFound when its stream is empty."""
        aggregate = self.load(aggregate_id)
        if not aggregate.exists:
            raise AggregateNotFound(kind, aggregate_id)
        return aggregate

    def execute(
        self,
        aggregate_id: str,
        decide: Callable[[A], Sequence[DomainEvent]],
        context: CommandContext,
        *,
        answer: Answer | None = None,
        attempts: int = 3,
    ) -> A:
        """Load, decide, save; on a lost race (ConcurrencyError) load again and decide afresh.

        Deciding again on the fresh state is always right: a command with the client's
        `expected_version` then fails with the true `current_version`, one without succeeds.
        Returns the aggregate with the new events applied.
        """
        for attempt in range(1, attempts + 1):
            aggregate = self.load(aggregate_id)
            events = decide(aggregate)
            try:
                self.save(aggregate, events, context, answer=answer)
            except ConcurrencyError:
                if attempt == attempts:
                    raise
                continue
            return aggregate
        raise AssertionError("unreachable")

    def save(
        self,
        aggregate: A,
        events: Sequence[DomainEvent],
        context: CommandContext,
        *,
        claims: Sequence[Claim] = (),
        answer: Answer | None = None,
    ) -> int:
        """Append `events` at the aggregate's version; return the new version.

        Raises the store's ConcurrencyError (someone else appended first) or ClaimTaken, having
        written nothing. With `answer` and a reservation in `context`, the idempotent answer
        (`answer(new_version)`) is stored in the same append.
        """
        if not events:
            return aggregate.version
        expected = aggregate.version
        occurred_at = self.clock()
        metadata = context.metadata()
        envelopes = [
            Envelope(
                event_id=self.ids(),
                stream_id=aggregate.stream_id,
                version=expected + offset,
                type=event.type,
                schema_version=event.schema_version,
                service=self.service,
                occurred_at=occurred_at,
                data=event.to_data(),
                metadata=dict(metadata),
            )
            for offset, event in enumerate(events, start=1)
        ]
        new_version = expected + len(envelopes)
        completion = None
        if context.reservation is not None and answer is not None:
            completion = IdempotencyCompletion(
                context.reservation, {"status_code": context.success_status, "body": answer(new_version)}
            )
        self.store.append(aggregate.stream_id, expected, envelopes, claims=claims, idempotency=completion)
        context.idempotency_stored = completion is not None
        for event in events:
            aggregate.mutate(event, occurred_at)
        if self.snapshot_every and new_version // self.snapshot_every > expected // self.snapshot_every:
            self._snapshot(aggregate)
        return new_version

    # helpers
    def _fold(self, aggregate: A, envelope: Envelope) -> None:
        # Upcast once, by the store's `read` (built with the service's contract), not again here.
        event_class = aggregate.event_class(envelope.type)
        if event_class is None:
            aggregate.skip(envelope.occurred_at)
        else:
            aggregate.mutate(event_class.from_data(envelope.data), envelope.occurred_at)

    def _restore(self, aggregate: A) -> None:
        snapshot = self.store.load_snapshot(aggregate.stream_id)
        if snapshot is None or snapshot.state.get("schema") != aggregate.snapshot_schema:
            return
        state = snapshot.state
        aggregate.restore_state(state.get("state") or {})
        aggregate.version = snapshot.version
        aggregate.created_at = state.get("created_at")
        aggregate.updated_at = state.get("updated_at")

    def _snapshot(self, aggregate: A) -> None:
        try:
            self.store.save_snapshot(aggregate.to_snapshot())
        except Exception:  # an optimisation only: the command has succeeded
            logger.warning("snapshot not saved", extra={"stream_id": aggregate.stream_id}, exc_info=True)
