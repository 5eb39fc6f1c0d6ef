"""The folds of user_notifications (pure): handle items, one mention item per (handle, post), edits."""

from __future__ import annotations

import uuid

import pytest

from escore.envelope import Envelope
from escore.memory_projection import InMemoryProjection
from escore.projection import mark_replayed
from escore.writes import Write
from notifications.items import handle_key, mention_key, mentioned_handle, user_key
from notifications.projectors.user_notifications import PROJECTION

pytestmark = pytest.mark.unit

T1, T2 = "2026-01-01T10:00:00.000000Z", "2026-01-02T10:00:00.000000Z"
ALICE, BOB, CAROL = (str(uuid.uuid4()) for _ in range(3))
POST = str(uuid.uuid4())


def envelope(stream_id: str, version: int, type_: str, data: dict[str, object], at: str = T1,
             schema_version: int = 1) -> Envelope:
    service = "posts" if stream_id.startswith("post-") else "profiles"
    return Envelope(str(uuid.uuid4()), stream_id, version, type_, schema_version, service, at, data,
                    {"correlation_id": str(uuid.uuid4())})


def registered(user_id: str, handle: str) -> Envelope:
    return envelope(f"user-{user_id}", 1, "UserRegistered", {"user_id": user_id, "handle": handle, "display_name": "x"})


def created(text: str, author: str = CAROL) -> Envelope:
    return envelope(f"post-{POST}", 1, "PostCreated", {"post_id": POST, "author_id": author, "text": text}, T1, 2)


def edited(text: str, version: int = 2, author: str | None = CAROL, created_at: str | None = T1) -> Envelope:
    data: dict[str, object] = {"text": text}
    if author and created_at:
        data.update(author_id=author, created_at=created_at, previous_tags=[])
    return envelope(f"post-{POST}", version, "PostEdited", data, T2, 3 if author else 1)


def writes(event: Envelope) -> list[Write]:
    decoded = PROJECTION.decode(event)
    assert decoded is not None
    return decoded.apply({})[1]


def test_a_registration_maps_the_handle_both_ways() -> None:
    found = writes(registered(ALICE, "alice"))
    assert {w.key for w in found} == {user_key(ALICE), handle_key("alice")}
    assert all(w.op == "update" and w.create and w.set == {"user_id": ALICE, "handle": "alice"} for w in found)


def test_a_post_writes_one_item_per_mentioned_handle() -> None:
    found = writes(created("hi @alice and @bob, @alice"))
    assert [w.key for w in found] == [mention_key("alice", T1, POST), mention_key("bob", T1, POST)]
    assert [mentioned_handle(w.key) for w in found] == ["alice", "bob"]
    assert all(w.op == "update" and w.create for w in found)  # an item that exists is updated, not replaced
    assert found[0].set == {"post_id": POST, "author_id": CAROL, "text": "hi @alice and @bob, @alice", "created_at": T1}
    assert writes(created("nobody here")) == []


def test_an_edit_writes_its_mentions_under_the_posts_creation_time() -> None:
    found = writes(edited("now @bob and @dave"))
    assert [w.key for w in found] == [mention_key("bob", T1, POST), mention_key("dave", T1, POST)]
    assert found[1].set["text"] == "now @bob and @dave" and found[1].set["created_at"] == T1


def test_an_old_edit_without_the_posts_facts_folds_only_with_the_streams_state() -> None:
    old = edited("@bob", author=None)
    assert writes(old) == []  # alone (the live engine): nothing known of the post
    folded = InMemoryProjection(PROJECTION).apply([created("@alice"), old]).items
    assert set(folded) == {mention_key("alice", T1, POST), mention_key("bob", T1, POST)}


def test_the_read_model_keeps_every_handle_ever_mentioned() -> None:
    events = [registered(ALICE, "alice"), registered(BOB, "bob"), created("@alice"), edited("@bob only", 2),
              edited("@alice again", 3)]
    items = InMemoryProjection(PROJECTION).apply(events).items
    assert items[mention_key("alice", T1, POST)]["text"] == "@alice again"  # the last text that mentions it
    assert items[mention_key("bob", T1, POST)]["text"] == "@bob only"
    assert items[handle_key("bob")] == {"user_id": BOB, "handle": "bob"}
    assert items[user_key(ALICE)] == {"user_id": ALICE, "handle": "alice"}


def test_folds_do_not_look_at_the_replay_flag() -> None:
    """The folds are the same for a replayed event (the read model is rebuilt); only effects skip it."""
    event = created("@alice")
    assert writes(mark_replayed(event)) == writes(event)


def test_types_it_does_not_fold_are_skipped() -> None:
    assert PROJECTION.decode(envelope(f"post-{POST}", 3, "PostDeleted", {}, T2)) is None
    assert PROJECTION.decode(envelope(f"user-{ALICE}", 2, "DisplayNameChanged", {"display_name": "y"})) is None
    assert PROJECTION.effects is not None
