"""The EventStore contract: what every adapter promises (escore.store), run against each of them."""

from __future__ import annotations

import sys
import threading
from collections import Counter
from typing import Any

import pytest

from escore.envelope import new_id
from escore.store import (
    MAX_APPEND_ITEMS,
    Claim,
    ClaimTaken,
    ConcurrencyError,
    EventStore,
    IdempotencyCompletion,
    IdempotencyInProgress,
    IdempotencyKey,
    IdempotencyKeyReused,
    Snapshot,
    TooLarge,
)
from escore.upcasting import SchemaTooNew, UpcasterRegistry
from tests.contract.kit import event, events, stream

THREADS = 24
ROUNDS = 25


class TestEventStoreContract:
    # reading and writing
    def test_reads_its_own_writes(self, store: EventStore) -> None:
        sid = stream()
        written = events(sid, 0, 3)
        assert store.append(sid, 0, written) == 3
        assert store.read(sid) == written
        assert store.read(sid, from_version=2) == written[1:]
        assert store.read(sid, from_version=4) == []
        assert store.current_version(sid) == 3
        assert store.read(stream()) == [] and store.current_version(stream()) == 0

    def test_a_long_stream_reads_back_whole_and_in_order(self, store: EventStore) -> None:
        sid = stream()
        text = "x" * 20_000  # 60 events of ~20 KB: more than one 1 MB Query page
        for version in range(0, 60, 10):
            store.append(sid, version, events(sid, version, 10, text=text))
        assert [e.version for e in store.read(sid)] == list(range(1, 61))
        assert store.current_version(sid) == 60

    def test_versions_are_contiguous_and_a_wrong_expected_version_conflicts_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        sid = stream()
        first = events(sid, 0, 2)
        store.append(sid, 0, first)
        for wrong in (0, 1, 3, 7):  # behind the stream, and ahead of it (which would leave a gap)
            with pytest.raises(ConcurrencyError) as caught:
                store.append(sid, wrong, events(sid, wrong, 1))
            assert (caught.value.expected_version, caught.value.current_version) == (wrong, 2)
        assert store.read(sid) == first
        assert store.append(sid, 2, events(sid, 2, 1)) == 3
        assert [e.version for e in store.read(sid)] == [1, 2, 3]

    def test_events_must_carry_the_versions_they_are_appended_at(self, store: EventStore) -> None:
        sid = stream()
        with pytest.raises(ValueError):
            store.append(sid, 0, [event(sid, 2)])
        with pytest.raises(ValueError):
            store.append(sid, 0, [event(stream(), 1)])
        with pytest.raises(ValueError):
            store.append(sid, 0, [])
        with pytest.raises(ValueError):  # `$` names the store's own items
            store.append("$claim#handle#alice", 0, [event("$claim#handle#alice", 1)])
        assert store.current_version(sid) == 0

    def test_a_multi_event_append_with_a_conflict_writes_nothing(self, store: EventStore) -> None:
        sid = stream()
        first = events(sid, 0, 2)
        store.append(sid, 0, first)
        with pytest.raises(ConcurrencyError):
            store.append(sid, 1, events(sid, 1, 3))  # would write 2, 3, 4; 2 exists
        assert store.read(sid) == first
        assert store.append(sid, 2, events(sid, 2, 3)) == 5

    def test_the_retry_of_an_append_that_succeeded_writes_nothing_more(self, store: EventStore) -> None:
        # An append whose answer was lost and which is sent again (same events, same event_ids).
        sid = stream()
        batch = events(sid, 0, 2)
        assert store.append(sid, 0, batch) == 2
        assert store.append(sid, 0, batch) == 2
        assert store.read(sid) == batch
        with pytest.raises(ConcurrencyError):  # other events at that version are a real conflict
            store.append(sid, 0, events(sid, 0, 2))

    # concurrency
    def test_many_writers_at_one_expected_version_have_exactly_one_winner(
        self, concurrent_store: EventStore, request: pytest.FixtureRequest
    ) -> None:
        store = concurrent_store
        sid = stream()
        barrier = threading.Barrier(THREADS)
        outcomes: list[Counter[str]] = [Counter() for _ in range(ROUNDS)]
        winners: list[list[str]] = [[] for _ in range(ROUNDS)]
        reported: list[set[int | None]] = [set() for _ in range(ROUNDS)]
        lock = threading.Lock()
        failures: list[BaseException] = []

        def writer() -> None:
            try:
                for round_ in range(ROUNDS):
                    mine = event(sid, round_ + 1)
                    barrier.wait(timeout=60)  # everyone appends at `round_` together
                    try:
                        store.append(sid, round_, [mine])
                        outcome = "won"
                    except ConcurrencyError as exc:
                        outcome = "lost"
                        with lock:
                            reported[round_].add(exc.current_version)
                    with lock:
                        outcomes[round_][outcome] += 1
                        if outcome == "won":
                            winners[round_].append(mine.event_id)
                    barrier.wait(timeout=60)  # the round is over for everyone
            except BaseException as exc:  # reported below, not lost in the thread
                failures.append(exc)
                barrier.abort()

        threads = [threading.Thread(target=writer) for _ in range(THREADS)]
        # A short GIL slice interleaves the threads far more often than the default 5 ms does.
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-3)
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            sys.setswitchinterval(interval)
        assert not failures, failures

        won = sum(o["won"] for o in outcomes)
        lost = sum(o["lost"] for o in outcomes)
        print(
            f"\n[{request.node.callspec.id}] threads={THREADS} rounds={ROUNDS} "
            f"winners={won} losers={lost} per-round={[(o['won'], o['lost']) for o in outcomes]}"
        )
        assert all(o == Counter(won=1, lost=THREADS - 1) for o in outcomes), outcomes
        assert (won, lost) == (ROUNDS, ROUNDS * (THREADS - 1))
        # Every loser was told the version the winner reached.
        assert reported == [{round_ + 1} for round_ in range(ROUNDS)]
        stored = store.read(sid)
        assert [e.version for e in stored] == list(range(1, ROUNDS + 1))
        assert [e.event_id for e in stored] == [w[0] for w in winners]

    # uniqueness claims
    def test_a_taken_claim_refuses_the_append_and_writes_no_events(self, store: EventStore) -> None:
        alice, mallory = stream(), stream()
        handle = f"alice{new_id()[:8]}"
        store.append(alice, 0, events(alice, 0, 1), claims=[Claim("handle", handle, alice)])
        assert store.claim_owner("handle", handle) == alice
        with pytest.raises(ClaimTaken) as caught:
            store.append(mallory, 0, events(mallory, 0, 2), claims=[Claim("handle", handle, mallory)])
        assert caught.value.claim.owner == mallory
        assert store.read(mallory) == [] and store.current_version(mallory) == 0
        assert store.claim_owner("handle", handle) == alice
        assert store.claim_owner("handle", "nobody") is None

    def test_the_owner_may_claim_again_and_a_claim_fails_with_its_events(self, store: EventStore) -> None:
        alice = stream()
        store.append(alice, 0, events(alice, 0, 1), claims=[Claim("handle", "alice", alice)])
        assert store.append(alice, 1, events(alice, 1, 1), claims=[Claim("handle", "alice", alice)]) == 2
        # A claim in an append that conflicts is not taken either.
        bob = stream()
        with pytest.raises(ConcurrencyError):
            store.append(alice, 1, events(alice, 1, 1), claims=[Claim("handle", "bob", bob)])
        assert store.claim_owner("handle", "bob") is None

    # idempotency
    def test_a_completed_key_returns_its_answer_and_a_retry_appends_nothing(self, store: EventStore) -> None:
        sid, key = stream(), IdempotencyKey("POST /posts", new_id())
        reservation = store.begin_idempotent(key, "hash-1")
        assert reservation.status == "in_progress" and reservation.token
        answer = {"status_code": 201, "body": {"post_id": sid, "version": 1}, "headers": {}}
        store.append(sid, 0, events(sid, 0, 1), idempotency=IdempotencyCompletion(reservation, answer))

        again = store.begin_idempotent(key, "hash-1")
        assert (again.status, again.response) == ("completed", answer)
        # A retry that still tried to write with the spent reservation appends nothing.
        with pytest.raises(IdempotencyInProgress):
            store.append(sid, 1, events(sid, 1, 1), idempotency=IdempotencyCompletion(reservation, answer))
        assert store.current_version(sid) == 1
        assert store.begin_idempotent(key, "hash-1").response == answer

    def test_a_command_that_appends_nothing_completes_its_key(self, store: EventStore) -> None:
        key = IdempotencyKey("PATCH /users/1", new_id())
        reservation = store.begin_idempotent(key, "h")
        store.complete_idempotent(IdempotencyCompletion(reservation, {"status_code": 200, "body": {}}))
        assert store.begin_idempotent(key, "h").status == "completed"
        with pytest.raises(IdempotencyInProgress):  # completing twice: the reservation is spent
            store.complete_idempotent(IdempotencyCompletion(reservation, {"status_code": 200}))

    def test_a_key_used_with_another_request_is_refused(self, store: EventStore) -> None:
        key = IdempotencyKey("POST /posts", new_id())
        reservation = store.begin_idempotent(key, "hash-1")
        with pytest.raises(IdempotencyKeyReused):
            store.begin_idempotent(key, "hash-2")
        store.complete_idempotent(IdempotencyCompletion(reservation, {"status_code": 201}))
        with pytest.raises(IdempotencyKeyReused):
            store.begin_idempotent(key, "hash-2")

    def test_a_second_begin_while_the_first_runs_is_in_progress(self, store: EventStore) -> None:
        key = IdempotencyKey("POST /posts", new_id())
        store.begin_idempotent(key, "h")
        with pytest.raises(IdempotencyInProgress):
            store.begin_idempotent(key, "h")

    def test_keys_are_scoped_to_method_and_path(self, store: EventStore) -> None:
        store.begin_idempotent(IdempotencyKey("POST /posts", "k"), "h")
        assert store.begin_idempotent(IdempotencyKey("PATCH /posts/1", "k"), "h").status == "in_progress"

    def test_abandon_frees_the_key_but_only_for_its_holder(self, store: EventStore) -> None:
        key = IdempotencyKey("POST /users", new_id())
        first = store.begin_idempotent(key, "h")
        store.abandon_idempotent(first)
        second = store.begin_idempotent(key, "h")
        assert second.status == "in_progress" and second.token != first.token
        store.abandon_idempotent(first)  # a stale holder cannot drop the new reservation
        with pytest.raises(IdempotencyInProgress):
            store.begin_idempotent(key, "h")
        store.complete_idempotent(IdempotencyCompletion(second, {"status_code": 201}))
        store.abandon_idempotent(second)  # nor can anyone drop a stored answer
        assert store.begin_idempotent(key, "h").status == "completed"

    # limits
    def test_an_append_beyond_one_transaction_raises_too_large_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        sid = stream()
        store.append(sid, 0, events(sid, 0, 1))
        with pytest.raises(TooLarge):
            store.append(sid, 1, events(sid, 1, 101))
        with pytest.raises(TooLarge):  # one slot of the transaction is the version check
            store.append(sid, 1, events(sid, 1, MAX_APPEND_ITEMS + 1))
        with pytest.raises(TooLarge):  # events plus claims
            claims = [Claim("tag", f"t{n}", sid) for n in range(2)]
            store.append(sid, 1, events(sid, 1, MAX_APPEND_ITEMS - 1), claims=claims)
        with pytest.raises(TooLarge):  # one event larger than an item
            store.append(sid, 1, [event(sid, 2, text="x" * 410_000)])
        with pytest.raises(TooLarge):  # 15 events of 300 KB: more than 4 MB
            store.append(sid, 1, events(sid, 1, 15, text="x" * 300_000))
        assert store.current_version(sid) == 1
        assert store.append(sid, 1, events(sid, 1, MAX_APPEND_ITEMS)) == 1 + MAX_APPEND_ITEMS

    # snapshots
    def test_snapshots_are_kept_newest_first_and_apart_from_events(self, store: EventStore) -> None:
        sid = stream()
        store.append(sid, 0, events(sid, 0, 5))
        assert store.load_snapshot(sid) is None
        store.save_snapshot(Snapshot(sid, 5, {"text": "v5"}))
        store.save_snapshot(Snapshot(sid, 3, {"text": "v3"}))  # a slow writer's older state
        assert store.load_snapshot(sid) == Snapshot(sid, 5, {"text": "v5"})
        store.save_snapshot(Snapshot(sid, 7, {"text": "v7", "n": [1, 2]}))
        assert store.load_snapshot(sid) == Snapshot(sid, 7, {"text": "v7", "n": [1, 2]})
        assert store.current_version(sid) == 5
        assert store.append(sid, 5, events(sid, 5, 1)) == 6

    # upcasting
    def test_read_upcasts_and_iter_all_returns_what_is_stored(
        self, store: EventStore, upcasters: UpcasterRegistry
    ) -> None:
        @upcasters.register("PostCreated", 1)
        def add_language(data: dict[str, Any]) -> dict[str, Any]:
            return {**data, "language": "und"}

        @upcasters.register("PostCreated", 2)
        def rename_text(data: dict[str, Any]) -> dict[str, Any]:
            data["body"] = data.pop("text")
            return data

        sid = stream()
        old = event(sid, 1, "PostCreated", schema_version=1, text="hi")
        current = event(sid, 2, "PostCreated", schema_version=3, body="yo", language="en")
        store.append(sid, 0, [old, current])
        read = store.read(sid)
        assert [(e.schema_version, e.data) for e in read] == [
            (3, {"language": "und", "body": "hi"}),
            (3, {"body": "yo", "language": "en"}),
        ]
        assert read[0].event_id == old.event_id
        assert [e for e in store.iter_all() if e.stream_id == sid] == [old, current]

        newer = event(sid, 3, "PostCreated", schema_version=4, body="?")
        store.append(sid, 2, [newer])
        with pytest.raises(SchemaTooNew):
            store.read(sid)

    def test_iter_all_returns_every_event_and_nothing_else(self, store: EventStore) -> None:
        a, b = stream(), stream()
        written = events(a, 0, 3) + events(b, 0, 2)
        key = IdempotencyKey("POST /users", new_id())
        reservation = store.begin_idempotent(key, "h")
        store.append(a, 0, written[:3], claims=[Claim("handle", "a", a)])
        store.append(b, 0, written[3:], idempotency=IdempotencyCompletion(reservation, {"status_code": 201}))
        store.begin_idempotent(IdempotencyKey("POST /users", new_id()), "h")  # one left in progress
        store.save_snapshot(Snapshot(a, 3, {}))
        everything = list(store.iter_all())
        assert sorted(everything, key=lambda e: (e.stream_id, e.version)) == sorted(
            written, key=lambda e: (e.stream_id, e.version)
        )
