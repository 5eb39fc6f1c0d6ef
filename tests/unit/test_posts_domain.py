"""The Post aggregate (pure) and the Repository that stores it (on the in-memory store)."""

from __future__ import annotations

import uuid
from itertools import count

import pytest

from escore.aggregate import AggregateNotFound, CommandContext, Repository, VersionConflict, canonical_uuid
from escore.envelope import Envelope
from escore.memory_store import InMemoryEventStore
from escore.store import ConcurrencyError, IdempotencyKey, Snapshot
from posts.contract import EVENTS
from posts.domain import Post, PostCreated, PostDeleted, PostEdited

pytestmark = pytest.mark.unit

AUTHOR = "6f1c6b1e-0000-4000-8000-000000000001"


def fold(post_id: str, *events: PostCreated | PostEdited | PostDeleted) -> Post:
    post = Post(post_id)
    for n, event in enumerate(events, start=1):
        post.mutate(event, f"2030-01-01T00:00:0{n}.000000Z")
    return post


def created(post_id: str = "p1", text: str = "hello") -> PostCreated:
    return PostCreated(post_id=post_id, author_id=AUTHOR, text=text)


class TestPost:
    def test_state_is_the_fold_of_its_events(self) -> None:
        post = fold("p1", created(), PostEdited(text="edited"))
        assert (post.version, post.author_id, post.text, post.deleted) == (2, AUTHOR, "edited", False)
        assert post.created_at == "2030-01-01T00:00:01.000000Z"
        assert post.updated_at == "2030-01-01T00:00:02.000000Z"
        assert post.view() == {
            "post_id": "p1", "author_id": AUTHOR, "text": "edited", "version": 2,
            "created_at": "2030-01-01T00:00:01.000000Z", "updated_at": "2030-01-01T00:00:02.000000Z",
        }

    def test_create_decides_one_event_and_changes_nothing(self) -> None:
        post = Post("p1")
        assert post.create(AUTHOR, "hi") == [PostCreated(post_id="p1", author_id=AUTHOR, text="hi")]
        assert post.version == 0 and not post.exists

    def test_a_post_is_created_once(self) -> None:
        with pytest.raises(VersionConflict):
            fold("p1", created()).create(AUTHOR, "again")

    def test_edit_and_delete_check_the_expected_version(self) -> None:
        post = fold("p1", created(text="hello #intro"))
        at = "2030-01-01T00:00:01.000000Z"
        # They carry the post's facts, so that a projection can fold each event alone.
        assert post.edit("new", expected_version=1) == [
            PostEdited(text="new", author_id=AUTHOR, created_at=at, previous_tags=["intro"])]
        with pytest.raises(VersionConflict) as raised:
            post.edit("new", expected_version=2)
        assert raised.value.current_version == 1
        assert post.delete(expected_version=None) == [PostDeleted(author_id=AUTHOR, created_at=at, tags=["intro"])]
        with pytest.raises(VersionConflict):
            post.delete(expected_version=7)

    def test_a_deleted_post_is_gone_for_reads_and_a_conflict_for_commands(self) -> None:
        post = fold("p1", created(), PostDeleted())
        with pytest.raises(AggregateNotFound):
            post.require_visible()
        for command in (lambda: post.edit("x", 2), lambda: post.delete(None), lambda: post.delete(2)):
            with pytest.raises(VersionConflict) as raised:
                command()
            assert raised.value.current_version == 2

    def test_an_unknown_post_is_not_found(self) -> None:
        post = Post("p1")
        for command in (lambda: post.edit("x", 1), lambda: post.delete(None), post.require_visible):
            with pytest.raises(AggregateNotFound):
                command()

    def test_event_data_is_the_contract_s(self) -> None:
        # schema 2 (posts.schemas): `tags` is always derived from the text
        assert created("p9", "t #A").to_data() == {"post_id": "p9", "author_id": AUTHOR, "text": "t #A", "tags": ["a"]}
        assert PostEdited(text="t").to_data() == {"text": "t", "tags": []}
        assert PostDeleted().to_data() == {}
        # PostEdited schema 3, PostDeleted schema 2: the post's facts, left out when unknown
        edited = PostEdited(text="t #b", author_id=AUTHOR, created_at="c", previous_tags=["a"]).to_data()
        assert edited == {"text": "t #b", "tags": ["b"], "author_id": AUTHOR, "created_at": "c", "previous_tags": ["a"]}
        assert PostDeleted(author_id=AUTHOR, created_at="c", tags=["a"]).to_data() == {
            "author_id": AUTHOR, "created_at": "c", "tags": ["a"]}
        assert PostCreated.from_data({"post_id": "p", "author_id": "a", "text": "t", "later": 1}) == PostCreated(
            post_id="p", author_id="a", text="t"
        )

    def test_ids_from_paths_are_canonical_uuids_only(self) -> None:
        value = uuid.uuid4()
        assert canonical_uuid(str(value), "post") == str(value)
        for loose in ("not-a-uuid", str(value).upper(), "{" + str(value) + "}", "urn:uuid:" + str(value),
                      value.hex, str(value) + "\n", " " + str(value)):
            with pytest.raises(AggregateNotFound):
                canonical_uuid(loose, "post")


def repository(store: InMemoryEventStore, **kwargs: object) -> Repository[Post]:
    ticks = count(1)
    return Repository(
        store, Post, "posts", clock=lambda: f"2030-01-01T00:00:{next(ticks):02d}.000000Z", **kwargs  # type: ignore[arg-type]
    )


class TestRepository:
    def test_save_writes_contract_envelopes_with_the_command_s_metadata(self) -> None:
        store = InMemoryEventStore()
        posts = repository(store)
        post = Post("p1")
        context = CommandContext("corr-1", causation_id="req-1", idempotency_key="key-1")
        assert posts.save(post, post.create(AUTHOR, "hi"), context) == 1
        assert post.version == 1 and post.created_at == "2030-01-01T00:00:01.000000Z"
        [stored] = store.read("post-p1")
        assert isinstance(stored, Envelope)
        assert (stored.stream_id, stored.version, stored.type, stored.service, stored.schema_version) == (
            "post-p1", 1, "PostCreated", "posts", 2,
        )
        assert stored.data == {"post_id": "p1", "author_id": AUTHOR, "text": "hi", "tags": []}
        assert stored.metadata == {"correlation_id": "corr-1", "causation_id": "req-1", "idempotency_key": "key-1"}
        uuid.UUID(stored.event_id)
        assert stored.occurred_at == "2030-01-01T00:00:01.000000Z"

    def test_schema_version_is_the_event_class_s_current_one(self) -> None:
        """Each event is written at its class's `schema_version` (posts.contract), and read back unchanged."""
        store = InMemoryEventStore(EVENTS.registry)
        posts = Repository(store, Post, "posts")
        post = Post("p1")
        posts.save(post, post.create(AUTHOR, "a"), CommandContext("c"))
        posts.save(post, post.edit("b", 1), CommandContext("c"))
        posts.save(post, post.delete(2), CommandContext("c"))
        assert [e.schema_version for e in store.read("post-p1")] == [2, 3, 2]
        assert [PostCreated.schema_version, PostEdited.schema_version, PostDeleted.schema_version] == [2, 3, 2]

    def test_load_folds_the_stream_and_get_raises_for_an_empty_one(self) -> None:
        store = InMemoryEventStore()
        posts = repository(store)
        post = Post("p1")
        posts.save(post, post.create(AUTHOR, "a"), CommandContext("c"))
        posts.save(post, post.edit("b", 1), CommandContext("c"))
        loaded = posts.load("p1")
        assert (loaded.version, loaded.text, loaded.created_at, loaded.updated_at) == (
            2, "b", "2030-01-01T00:00:01.000000Z", "2030-01-01T00:00:02.000000Z",
        )
        assert not posts.load("p2").exists
        with pytest.raises(AggregateNotFound):
            posts.get("p2", "post")

    def test_unknown_event_types_are_skipped_but_counted(self) -> None:
        store = InMemoryEventStore()
        posts = repository(store)
        post = Post("p1")
        posts.save(post, post.create(AUTHOR, "a"), CommandContext("c"))
        other = Envelope("e2", "post-p1", 2, "PostPinned", 1, "posts", "2030-01-01T00:00:09.000000Z", {}, {})
        store.append("post-p1", 1, [other])
        loaded = posts.load("p1")
        assert (loaded.version, loaded.text) == (2, "a")

    def test_a_stale_save_raises_and_writes_nothing(self) -> None:
        store = InMemoryEventStore()
        posts = repository(store)
        post = Post("p1")
        posts.save(post, post.create(AUTHOR, "a"), CommandContext("c"))
        first, second = posts.load("p1"), posts.load("p1")
        posts.save(first, first.edit("one", None), CommandContext("c"))
        with pytest.raises(ConcurrencyError):
            posts.save(second, second.edit("two", None), CommandContext("c"))
        assert store.current_version("post-p1") == 2 and posts.load("p1").text == "one"

    def test_execute_decides_again_after_a_lost_race(self) -> None:
        store = InMemoryEventStore()
        posts = repository(store)
        post = Post("p1")
        posts.save(post, post.create(AUTHOR, "a"), CommandContext("c"))
        raced = []

        def decide(p: Post) -> list[PostEdited]:
            if not raced:  # another writer gets in between our load and our append
                raced.append(True)
                rival = posts.load("p1")
                posts.save(rival, rival.edit("rival", None), CommandContext("c"))
            return [PostEdited(text="ours")]

        result = posts.execute("p1", decide, CommandContext("c"))
        assert result.version == 3 and posts.load("p1").text == "ours"

    def test_execute_with_an_expected_version_reports_the_true_current_version(self) -> None:
        store = InMemoryEventStore()
        posts = repository(store)
        post = Post("p1")
        posts.save(post, post.create(AUTHOR, "a"), CommandContext("c"))
        posts.execute("p1", lambda p: p.edit("b", 1), CommandContext("c"))
        with pytest.raises(VersionConflict) as raised:
            posts.execute("p1", lambda p: p.edit("c", 1), CommandContext("c"))
        assert raised.value.current_version == 2

    def test_the_idempotent_answer_is_stored_with_the_events(self) -> None:
        store = InMemoryEventStore()
        posts = repository(store)
        reservation = store.begin_idempotent(IdempotencyKey("POST /posts", "k"), "hash")
        context = CommandContext("c", reservation=reservation, success_status=201)
        post = Post("p1")
        posts.save(post, post.create(AUTHOR, "a"), context, answer=lambda v: {"post_id": "p1", "version": v})
        assert context.idempotency_stored
        record = store.begin_idempotent(IdempotencyKey("POST /posts", "k"), "hash")
        assert record.status == "completed"
        assert record.response == {"status_code": 201, "body": {"post_id": "p1", "version": 1}}

    def test_snapshots_every_n_events_and_loads_from_them(self) -> None:
        store = InMemoryEventStore()
        posts = repository(store, snapshot_every=3)
        post = Post("p1")
        posts.save(post, post.create(AUTHOR, "v1"), CommandContext("c"))
        for n in range(2, 8):
            posts.save(post, post.edit(f"v{n}", None), CommandContext("c"))
        snapshot = store.load_snapshot("post-p1")
        assert snapshot is not None and snapshot.version == 6
        assert snapshot.state["state"] == {"author_id": AUTHOR, "text": "v6", "deleted": False}
        loaded = posts.load("p1")
        assert (loaded.version, loaded.text, loaded.created_at) == (7, "v7", "2030-01-01T00:00:01.000000Z")

    def test_a_load_starts_from_the_snapshot(self) -> None:
        store = InMemoryEventStore()
        posts = repository(store, snapshot_every=2)
        post = Post("p1")
        posts.save(post, post.create(AUTHOR, "v1"), CommandContext("c"))
        posts.save(post, post.edit("v2", None), CommandContext("c"))
        # Tamper with the snapshot: a load that used it shows the tampered text.
        snapshot = store.load_snapshot("post-p1")
        assert snapshot is not None
        state = {**snapshot.state, "state": {**snapshot.state["state"], "text": "from snapshot"}}
        store.save_snapshot(Snapshot("post-p1", 3, state))  # a newer one wins
        store.append("post-p1", 2, [Envelope("e3", "post-p1", 3, "PostDeleted", 1, "posts", "t", {}, {})])
        assert posts.load("p1").text == "from snapshot"

    def test_a_snapshot_of_another_schema_is_ignored(self) -> None:
        store = InMemoryEventStore()
        posts = repository(store, snapshot_every=1)
        post = Post("p1")
        posts.save(post, post.create(AUTHOR, "v1"), CommandContext("c"))
        store.save_snapshot(Snapshot("post-p1", 5, {"schema": 99, "state": {"text": "wrong"}}))
        assert (posts.load("p1").version, posts.load("p1").text) == (1, "v1")

    def test_a_failed_snapshot_write_does_not_fail_the_command(self) -> None:
        class FailingSnapshots(InMemoryEventStore):
            def save_snapshot(self, snapshot: Snapshot) -> None:
                raise RuntimeError("throttled")

        store = FailingSnapshots()
        posts = repository(store, snapshot_every=1)
        post = Post("p1")
        assert posts.save(post, post.create(AUTHOR, "v1"), CommandContext("c")) == 1
        assert store.current_version("post-p1") == 1
