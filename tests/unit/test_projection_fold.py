"""Pure parts of the projection engine and of the profiles projections: write coalescing, the folds,
their independence from the order of streams, cursors, publisher chunking."""

from __future__ import annotations

import random
from typing import Any

import pytest

from escore.attributes import from_attr, to_attr
from escore.cursors import InvalidCursor, decode_cursor, encode_cursor
from escore.envelope import Envelope, new_id
from escore.memory_projection import InMemoryProjection
from escore.projection import ProjectionSpec
from escore.writes import Write, apply_write, count, delete, put, update
from profiles.projectors import user_profiles, user_timeline
from publisher.handler import MAX_BYTES_PER_CALL, MAX_RECORDS_PER_CALL, _chunks, _Outgoing

pytestmark = pytest.mark.unit

KEY = ("k", "1")


def random_write(rng: random.Random, shared: bool) -> Write:
    attrs = ["a", "b", "c"]
    names = rng.sample(attrs, 3)
    if shared:  # counters, and attributes every stream sets alike
        return count(KEY, add={names[0]: rng.randint(-3, 3)},
                     set={"name": "same"} if rng.random() < 0.5 else None)
    kind = rng.choice(["update", "update", "update", "put", "delete"])
    if kind == "delete":
        return delete(KEY)
    if kind == "put":
        return put(KEY, {name: rng.randint(0, 9) for name in rng.sample(attrs, rng.randint(0, 3))})
    return update(
        KEY,
        set={names[0]: rng.randint(0, 9)} if rng.random() < 0.7 else None,
        remove=[names[2]] if rng.random() < 0.3 else (),
        create=rng.random() < 0.3,
    )


@pytest.mark.parametrize("seed", range(200))
def test_coalesced_write_has_the_effect_of_the_sequence(seed: int) -> None:
    rng = random.Random(seed)
    shared = seed % 2 == 1  # an item is owned (put/update/delete) or shared (count), never both
    writes = [random_write(rng, shared) for _ in range(rng.randint(1, 6))]
    start: dict[str, Any] | None = rng.choice([None, {"a": 1, "b": 2}, {"c": 5}])
    sequential = start
    for write in writes:
        sequential = apply_write(sequential, write)
    merged = writes[0]
    for write in writes[1:]:
        merged = merged.then(write)
    coalesced = apply_write(start, merged)
    # An update on a missing item creates it (possibly empty): compare "no item" and "{}" alike
    # only where DynamoDB would; an update with nothing in it is not sent at all.
    assert (coalesced or {}) == (sequential or {})


def test_adds_of_one_key_coalesce_into_one_add() -> None:
    merged = count(KEY, add={"post_count": 1}).then(count(KEY, add={"post_count": 1}))
    merged = merged.then(count(KEY, add={"post_count": -1}))
    assert merged == Write(KEY, "count", {}, {"post_count": 1}, frozenset())


def test_owned_and_shared_writes_do_not_mix_and_names_are_checked() -> None:
    with pytest.raises(ValueError):
        update(KEY, set={"a": 1}).then(count(KEY, add={"n": 1}))
    for reserved in ("_v", "_w#x", "pk", "sk"):
        with pytest.raises(ValueError):
            update(KEY, set={reserved: 1})
    # A run that starts with a create may find no item; one that starts with an update may not.
    assert put(KEY, {"a": 1}).then(update(KEY, set={"a": 2})).may_create
    assert not update(KEY, set={"a": 2}).then(delete(KEY)).may_create
    assert put(KEY, {"a": 1}).then(delete(KEY)) == Write(KEY, "delete", create=True)


def test_attribute_values_round_trip() -> None:
    value = {"s": "x", "n": -3, "b": True, "none": None, "m": {"l": [1, "two", False]}}
    assert from_attr(to_attr(value)) == value
    with pytest.raises(TypeError):
        to_attr(1.5)


# --- the profiles projections, folded in memory -------------------------------------------------

def envelope(stream_id: str, version: int, type_: str, data: dict[str, Any], at: str) -> Envelope:
    service = "posts" if stream_id.startswith("post-") else "profiles"
    return Envelope(new_id(), stream_id, version, type_, 1, service, at, data, {"correlation_id": "c"})


def fold_in_memory(spec: ProjectionSpec, events: list[Envelope]) -> dict[tuple[str, str], dict[str, Any]]:
    """Apply `events` in the given order (each stream's own events must be in version order)."""
    return InMemoryProjection(spec).apply(events).items


def scenario(rng: random.Random) -> list[list[Envelope]]:
    """Streams of events (each in version order): users, their posts, edits, deletions."""
    clock = iter(f"2024-01-01T00:{m:02d}:{s:02d}.{u:06d}Z" for m in range(60) for s in range(60) for u in (0, 1))
    users = [new_id() for _ in range(4)]
    streams: list[list[Envelope]] = []
    for user in users[:3]:  # the fourth never registers, but posts
        sid = f"user-{user}"
        stream = [envelope(sid, 1, "UserRegistered", {"user_id": user, "handle": user[:8], "display_name": "A"},
                           next(clock))]
        stream.append(envelope(sid, 2, "HandleReserved", {}, next(clock)))  # unknown to the projections
        stream.append(envelope(sid, 3, "DisplayNameChanged", {"display_name": "B" + user[:3]}, next(clock)))
        streams.append(stream)
    for _ in range(12):
        post = new_id()
        sid = f"post-{post}"
        stream = [envelope(sid, 1, "PostCreated", {"post_id": post, "author_id": rng.choice(users), "text": "t1"},
                           next(clock))]
        for _ in range(rng.randint(0, 2)):
            stream.append(envelope(sid, len(stream) + 1, "PostEdited", {"text": f"t{len(stream) + 1}"}, next(clock)))
        if rng.random() < 0.4:
            stream.append(envelope(sid, len(stream) + 1, "PostDeleted", {}, next(clock)))
            if rng.random() < 0.5:  # an edit after deletion changes nothing
                stream.append(envelope(sid, len(stream) + 1, "PostEdited", {"text": "ghost"}, next(clock)))
        streams.append(stream)
    return streams


def interleave(rng: random.Random, streams: list[list[Envelope]]) -> list[Envelope]:
    cursors = [list(s) for s in streams]
    out: list[Envelope] = []
    while any(cursors):
        stream = rng.choice([c for c in cursors if c])
        out.append(stream.pop(0))
    return out


@pytest.mark.parametrize("spec", [user_profiles.PROJECTION, user_timeline.PROJECTION], ids=lambda s: s.name)
@pytest.mark.parametrize("seed", range(20))
def test_the_result_does_not_depend_on_the_order_of_streams(spec: ProjectionSpec, seed: int) -> None:
    rng = random.Random(seed)
    streams = scenario(rng)
    reference = fold_in_memory(spec, [e for s in streams for e in s])
    for _ in range(5):
        assert fold_in_memory(spec, interleave(rng, streams)) == reference


def test_profiles_fold() -> None:
    user, post1, post2 = new_id(), new_id(), new_id()
    at = "2024-01-01T00:00:00.000000Z"
    events = [
        envelope(f"post-{post1}", 1, "PostCreated", {"post_id": post1, "author_id": user, "text": "x"}, at),
        envelope(f"post-{post2}", 1, "PostCreated", {"post_id": post2, "author_id": user, "text": "y"}, at),
        envelope(f"post-{post2}", 2, "PostDeleted", {}, at),
        envelope(f"post-{post2}", 3, "PostDeleted", {}, at),  # not live any more: no second -1
        envelope(f"user-{user}", 1, "UserRegistered", {"user_id": user, "handle": "al", "display_name": "Al"}, at),
        envelope(f"user-{user}", 2, "DisplayNameChanged", {"display_name": "Alice"}, at),
    ]
    table = fold_in_memory(user_profiles.PROJECTION, events)
    assert table == {user_profiles.profile_key(user): {
        "user_id": user, "handle": "al", "display_name": "Alice", "post_count": 1}}


def test_timeline_fold() -> None:
    user, post1, post2 = new_id(), new_id(), new_id()
    t1, t2 = "2024-01-01T00:00:01.000000Z", "2024-01-01T00:00:02.000000Z"
    events = [
        envelope(f"post-{post1}", 1, "PostCreated", {"post_id": post1, "author_id": user, "text": "a"}, t1),
        envelope(f"post-{post2}", 1, "PostCreated", {"post_id": post2, "author_id": user, "text": "b"}, t2),
        envelope(f"post-{post1}", 2, "PostEdited", {"text": "a2"}, t2),
        envelope(f"post-{post2}", 2, "PostDeleted", {}, t2),
    ]
    table = fold_in_memory(user_timeline.PROJECTION, events)
    assert table == {
        (user_timeline.timeline_pk(user), user_timeline.timeline_sk(t1, post1)):
            {"post_id": post1, "text": "a2", "created_at": t1},
    }


# --- cursors and publisher chunks ---------------------------------------------------------

def test_cursor_round_trip_and_rejects() -> None:
    sk = "2024-01-01T00:00:01.000000Z#" + new_id()
    assert decode_cursor(encode_cursor(sk)) == sk
    for bad in ["", "!!!", "e30", encode_cursor("not-a-key"), "a" * 600, "eyJzayI6MX0"]:
        with pytest.raises(InvalidCursor):
            decode_cursor(bad)


def test_publisher_chunks_respect_count_and_bytes() -> None:
    small = [_Outgoing(str(i), f"s{i}", b"x" * 100) for i in range(1200)]
    assert [len(c) for c in _chunks(small)] == [MAX_RECORDS_PER_CALL, MAX_RECORDS_PER_CALL, 200]
    big = [_Outgoing(str(i), f"s{i}", b"x" * (1024 * 1024 - 10)) for i in range(11)]
    chunks = list(_chunks(big))
    assert all(sum(o.size for o in c) <= MAX_BYTES_PER_CALL for c in chunks)
    assert sum(len(c) for c in chunks) == 11
