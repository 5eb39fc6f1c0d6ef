"""The EventStore port: what every event store adapter (in-memory, DynamoDB) promises.

The contract test suite in tests/contract/ runs against every adapter.

Semantics:
- `append(stream_id, expected_version, events, claims=, idempotency=)` writes the events at
  versions expected_version+1 .. expected_version+len(events), all or nothing. If the stream's
  current version is not `expected_version` it raises `ConcurrencyError` and writes nothing.
  Uniqueness claims and the completion of an idempotency record are written in the same
  atomic unit; a claim already held by another owner raises `ClaimTaken` and writes nothing.
- Idempotency: `begin_idempotent` reserves a key (scope + key) for a request; a finished
  record is returned so the caller can answer with the stored response; a key held by a request
  still running raises `IdempotencyInProgress`; a key used with another request hash raises
  `IdempotencyKeyReused`. `append(..., idempotency=...)` or `complete_idempotent` store the
  response; `abandon_idempotent` drops a reservation whose request failed (4xx, crash).
  Records are kept at least IDEMPOTENCY_TTL_SECONDS.
- Snapshots are stored apart from events, so saving one never conflicts with an append.
- `read` returns events upcast to the schema the code reads (the adapter's UpcasterRegistry);
  `iter_all` returns them exactly as stored, for tooling that compares the store with the archive.
- An append whose first event is already stored at its version (same event_id) is the retry of an
  append that succeeded (a lost response): it returns the new version and writes nothing.
- Stream ids starting with `$` are reserved for the store's own items (claims, idempotency
  records, snapshots) and are refused.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from escore.envelope import Envelope

IDEMPOTENCY_TTL_SECONDS = 7 * 24 * 3600
IDEMPOTENCY_LEASE_SECONDS = 60
# One append is one DynamoDB transaction: at most 100 items and 4 MB, events + claims + idempotency.
MAX_TRANSACT_ITEMS = 100
MAX_TRANSACT_BYTES = 4 * 1024 * 1024
MAX_ITEM_BYTES = 400 * 1024
# One slot of every append's transaction is kept for the check that the stream is at the expected
# version (a ConditionCheck on the item at expected_version), so the limit is the same for every
# adapter and every expected_version: events + claims + idempotency <= 99.
APPEND_RESERVED_ITEMS = 1
MAX_APPEND_ITEMS = MAX_TRANSACT_ITEMS - APPEND_RESERVED_ITEMS
# Room left in an item (and in the transaction) for the key and the other attributes.
ITEM_OVERHEAD_BYTES = 1024
TRANSACT_OVERHEAD_BYTES = 64 * 1024
RESERVED_STREAM_PREFIX = "$"


def check_append_size(
    events: Sequence[Envelope],
    claims: Sequence[Claim],
    has_idempotency: bool,
    *,
    response_bytes: int = 0,
) -> None:
    """Refuse, before any write, an append that one transaction cannot hold (all adapters alike).

    `response_bytes`: the size of the idempotency response stored with the events (its JSON).
    """
    from escore.envelope import encode

    items = len(events) + len(claims) + (1 if has_idempotency else 0)
    if items > MAX_APPEND_ITEMS:
        raise TooLarge(
            f"an append holds at most {MAX_APPEND_ITEMS} items (events, claims, idempotency), got {items}"
        )
    sizes = [len(encode(e)) for e in events]
    if any(size > MAX_ITEM_BYTES - ITEM_OVERHEAD_BYTES for size in [*sizes, response_bytes]):
        raise TooLarge("an event (or the stored response) is larger than one DynamoDB item can hold")
    if sum(sizes) + response_bytes > MAX_TRANSACT_BYTES - TRANSACT_OVERHEAD_BYTES:
        raise TooLarge("an append is larger than one DynamoDB transaction can hold")


def check_contiguous(stream_id: str, expected_version: int, events: Sequence[Envelope]) -> None:
    if not stream_id or stream_id.startswith(RESERVED_STREAM_PREFIX):
        raise ValueError(f"stream_id must be non-empty and not start with {RESERVED_STREAM_PREFIX!r}")
    if expected_version < 0:
        raise ValueError("expected_version must be >= 0")
    if not events:
        raise ValueError("append needs at least one event")
    for offset, event in enumerate(events, start=1):
        if event.stream_id != stream_id or event.version != expected_version + offset:
            raise ValueError(
                f"event {offset} must have stream_id {stream_id} and version {expected_version + offset}"
            )


class EventStoreError(Exception):
    """Base of the store's domain errors."""


class ConcurrencyError(EventStoreError):
    def __init__(self, stream_id: str, expected_version: int, current_version: int | None = None):
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.current_version = current_version
        super().__init__(
            f"stream {stream_id}: expected version {expected_version}, current {current_version}"
        )


class ClaimTaken(EventStoreError):
    def __init__(self, claim: Claim):
        self.claim = claim
        super().__init__(f"{claim.scope} {claim.value!r} is taken")


class IdempotencyInProgress(EventStoreError):
    pass


class IdempotencyKeyReused(EventStoreError):
    pass


class TooLarge(EventStoreError):
    """An append beyond what one atomic write can hold (100 items, 4 MB)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A unique value (e.g. scope 'handle', value 'alice') owned by a stream."""

    scope: str
    value: str
    owner: str


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    scope: str  # method and path, e.g. "POST /users"
    key: str

    @property
    def id(self) -> str:
        return f"{self.scope}#{self.key}"


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    key: IdempotencyKey
    request_hash: str
    status: str  # "in_progress" | "completed"
    response: dict[str, Any] | None = None  # {"status_code": int, "body": ..., "headers": ...}
    token: str = ""  # who holds an in-progress reservation


@dataclass(frozen=True, slots=True)
class IdempotencyCompletion:
    """Given to `append` so the stored response is written atomically with the events."""

    reservation: IdempotencyRecord
    response: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Snapshot:
    stream_id: str
    version: int
    state: dict[str, Any]


class EventStore(abc.ABC):
    @abc.abstractmethod
    def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Envelope],
        *,
        claims: Sequence[Claim] = (),
        idempotency: IdempotencyCompletion | None = None,
    ) -> int:
        """Append atomically; return the stream's new version."""

    @abc.abstractmethod
    def read(self, stream_id: str, from_version: int = 1) -> list[Envelope]:
        """The stream's events from `from_version` on, in version order (empty if none)."""

    @abc.abstractmethod
    def current_version(self, stream_id: str) -> int:
        """0 for a stream with no events."""

    @abc.abstractmethod
    def iter_all(self) -> Iterator[Envelope]:
        """Every event of every stream (no order across streams). For verify and tooling."""

    @abc.abstractmethod
    def claim_owner(self, scope: str, value: str) -> str | None:
        """The stream that holds a claim, or None."""

    # idempotency
    @abc.abstractmethod
    def begin_idempotent(self, key: IdempotencyKey, request_hash: str) -> IdempotencyRecord:
        """Reserve the key, or return the completed record for it.

        Returns a record with status 'in_progress' (ours: go on and run the command) or
        'completed' (answer with record.response). Raises IdempotencyInProgress or
        IdempotencyKeyReused.
        """

    @abc.abstractmethod
    def complete_idempotent(self, completion: IdempotencyCompletion) -> None:
        """Store the response for a command that appended nothing."""

    @abc.abstractmethod
    def abandon_idempotent(self, reservation: IdempotencyRecord) -> None:
        """Drop our reservation (the request failed and is to be evaluated afresh on retry)."""

    # snapshots
    @abc.abstractmethod
    def save_snapshot(self, snapshot: Snapshot) -> None: ...

    @abc.abstractmethod
    def load_snapshot(self, stream_id: str) -> Snapshot | None: ...
