"""In-memory EventStore: deterministic, thread-safe, for unit tests and pure-domain work."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence

import orjson

from escore.envelope import Envelope
from escore.store import (
    IDEMPOTENCY_LEASE_SECONDS,
    Claim,
    ClaimTaken,
    ConcurrencyError,
    EventStore,
    IdempotencyCompletion,
    IdempotencyInProgress,
    IdempotencyKey,
    IdempotencyKeyReused,
    IdempotencyRecord,
    Snapshot,
    check_append_size,
    check_contiguous,
)
from escore.upcasting import UpcasterRegistry


class InMemoryEventStore(EventStore):
    def __init__(self, upcasters: UpcasterRegistry | None = None) -> None:
        # The service's contract's steps (escore.contract); None: events are read as stored.
        self._upcasters = upcasters
        self._lock = threading.Lock()
        self._streams: dict[str, list[Envelope]] = {}
        self._claims: dict[tuple[str, str], str] = {}
        self._idempotency: dict[str, tuple[IdempotencyRecord, float]] = {}
        self._snapshots: dict[str, Snapshot] = {}

    def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Envelope],
        *,
        claims: Sequence[Claim] = (),
        idempotency: IdempotencyCompletion | None = None,
    ) -> int:
        check_contiguous(stream_id, expected_version, events)
        response_bytes = len(orjson.dumps(idempotency.response)) if idempotency is not None else 0
        check_append_size(events, claims, idempotency is not None, response_bytes=response_bytes)
        with self._lock:
            stream = self._streams.get(stream_id, [])
            if len(stream) > expected_version and stream[expected_version].event_id == events[0].event_id:
                return expected_version + len(events)  # the retry of an append that succeeded
            if len(stream) != expected_version:
                raise ConcurrencyError(stream_id, expected_version, len(stream))
            for claim in claims:
                owner = self._claims.get((claim.scope, claim.value))
                if owner is not None and owner != claim.owner:
                    raise ClaimTaken(claim)
            if idempotency is not None:
                self._check_reservation(idempotency.reservation)
            self._streams[stream_id] = [*stream, *events]
            for claim in claims:
                self._claims[(claim.scope, claim.value)] = claim.owner
            if idempotency is not None:
                self._store_completion(idempotency)
            return expected_version + len(events)

    def read(self, stream_id: str, from_version: int = 1) -> list[Envelope]:
        with self._lock:
            stored = list(self._streams.get(stream_id, [])[max(from_version, 1) - 1 :])
        upcasters = self._upcasters
        return stored if upcasters is None else [upcasters.upcast(event) for event in stored]

    def current_version(self, stream_id: str) -> int:
        with self._lock:
            return len(self._streams.get(stream_id, []))

    def iter_all(self) -> Iterator[Envelope]:
        with self._lock:
            snapshot = [event for stream in self._streams.values() for event in stream]
        return iter(snapshot)

    def claim_owner(self, scope: str, value: str) -> str | None:
        with self._lock:
            return self._claims.get((scope, value))

    def begin_idempotent(self, key: IdempotencyKey, request_hash: str) -> IdempotencyRecord:
        now = time.monotonic()
        with self._lock:
            existing = self._idempotency.get(key.id)
            if existing is not None:
                record, lease_until = existing
                if record.request_hash != request_hash:
                    raise IdempotencyKeyReused(key.id)
                if record.status == "completed":
                    return record
                if lease_until > now:
                    raise IdempotencyInProgress(key.id)
            record = IdempotencyRecord(key, request_hash, "in_progress", token=uuid.uuid4().hex)
            self._idempotency[key.id] = (record, now + IDEMPOTENCY_LEASE_SECONDS)
            return record

    def complete_idempotent(self, completion: IdempotencyCompletion) -> None:
        with self._lock:
            self._check_reservation(completion.reservation)
            self._store_completion(completion)

    def abandon_idempotent(self, reservation: IdempotencyRecord) -> None:
        with self._lock:
            existing = self._idempotency.get(reservation.key.id)
            # Only our own reservation, and never a stored answer.
            if (
                existing is not None
                and existing[0].token == reservation.token
                and existing[0].status == "in_progress"
            ):
                del self._idempotency[reservation.key.id]

    def save_snapshot(self, snapshot: Snapshot) -> None:
        with self._lock:
            current = self._snapshots.get(snapshot.stream_id)
            if current is None or current.version < snapshot.version:
                self._snapshots[snapshot.stream_id] = snapshot

    def load_snapshot(self, stream_id: str) -> Snapshot | None:
        with self._lock:
            return self._snapshots.get(stream_id)

    # helpers, called with the lock held
    def _check_reservation(self, reservation: IdempotencyRecord) -> None:
        existing = self._idempotency.get(reservation.key.id)
        if existing is None or existing[0].token != reservation.token or existing[0].status != "in_progress":
            raise IdempotencyInProgress(f"reservation of {reservation.key.id} is no longer held")

    def _store_completion(self, completion: IdempotencyCompletion) -> None:
        reservation = completion.reservation
        done = IdempotencyRecord(
            reservation.key, reservation.request_hash, "completed", completion.response, reservation.token
        )
        self._idempotency[reservation.key.id] = (done, float("inf"))
