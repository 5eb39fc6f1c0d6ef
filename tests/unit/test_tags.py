"""The hashtag rule (`posts.schemas.hashtags`), the upcasting steps PostCreated/PostEdited 1 -> 2,
the hashtag_counts fold, and that every reader registers the steps of the events it reads."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from escore.envelope import Envelope, new_id
from escore.memory_projection import InMemoryProjection
from escore.projection import ProjectionSpec
from escore.upcasting import SchemaTooNew
from eventstack.topology import TOPOLOGY
from posts.contract import MAX_TAGS_PER_POST, hashtags, normalize_tag
from posts.domain import Post, PostCreated, PostEdited
from posts.projectors import hashtag_counts
from tests.support.projectors import upcasters

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


# --- the rule ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "tags"), [
    ("no tags here", []),
    ("#one", ["one"]),
    ("a #Two and #two and #TWO", ["two"]),  # lower-cased, de-duplicated
    ("#b #a #c_1 #9", ["9", "a", "b", "c_1"]),  # sorted; digits and underscores count
    ("start #x, (#y) \"#z\" /#w! #v.", ["v", "w", "x", "y", "z"]),  # punctuation ends or precedes a tag
    ("#", []), ("# x", []), ("#-x", []), ("#!", []),  # at least one character
    ("a#b c_#d 9#e", []),  # not inside a word
    ("##double #tag#next", ["tag"]),  # no '#' before the '#'; a '#' ends a tag
    ("http://example.com/page#section", []),
    ("#café #naïve #日本", []),  # a run that goes on with a non-ASCII letter is no tag (never "caf")
    ("#tag\u00e9s #ok\u2026 #fin\u3002", ["fin", "ok"]),  # … and 。 are not letters: the tag ends there
    ("#" + "a" * 50, ["a" * 50]),
    ("#" + "a" * 51, []),  # longer than 50: no tag, not a truncated one
    ("line\n#first\t#second", ["first", "second"]),
])
def test_the_rule(text: str, tags: list[str]) -> None:
    assert hashtags(text) == tags


def test_at_most_30_tags_the_first_in_order_of_appearance() -> None:
    words = [f"t{n:02d}" for n in range(40)]
    text = " ".join(f"#{w} #{w.upper()}" for w in reversed(words))  # duplicates do not count twice
    assert hashtags(text) == sorted(reversed(words[-MAX_TAGS_PER_POST:])) == sorted(words[10:])
    assert len(hashtags(text)) == MAX_TAGS_PER_POST


@pytest.mark.parametrize(("given", "normalized"), [
    ("python", "python"), ("PyThOn", "python"), ("a_1", "a_1"), ("x" * 50, "x" * 50),
    ("", None), ("#python", None), ("a-b", None), ("café", None), ("x" * 51, None), ("a b", None),
])
def test_a_tag_in_a_path(given: str, normalized: str | None) -> None:
    assert normalize_tag(given) == normalized


# --- the upcasting steps -------------------------------------------------------------------------

def make(type_: str, schema_version: int, data: dict[str, Any], version: int = 1) -> Envelope:
    return Envelope(new_id(), "post-1", version, type_, schema_version, "posts", "2024-01-01T00:00:00.000000Z",
                    data, {"correlation_id": "c"})


def test_the_current_schemas() -> None:
    assert upcasters.current_version("PostCreated") == 2
    assert upcasters.current_version("PostEdited") == 3
    assert upcasters.current_version("PostDeleted") == 2


def test_the_post_s_facts_cannot_be_upcast_into_old_events() -> None:
    # PostEdited 3 and PostDeleted 2 add the post's author, creation time and tags: facts an old
    # event does not hold. The steps add nothing; readers take them from earlier events.
    edited = upcasters.upcast(make("PostEdited", 2, {"text": "#x", "tags": ["x"]}, version=2))
    assert (edited.schema_version, edited.data) == (3, {"text": "#x", "tags": ["x"]})
    deleted = upcasters.upcast(make("PostDeleted", 1, {}, version=3))
    assert (deleted.schema_version, deleted.data) == (2, {})


def test_post_created_1_to_2_adds_the_tags_of_the_text() -> None:
    old = make("PostCreated", 1, {"post_id": "p", "author_id": "a", "text": "hi #Python #rust #python"})
    new = upcasters.upcast(old)
    assert new.schema_version == 2
    assert new.data == {"post_id": "p", "author_id": "a", "text": "hi #Python #rust #python", "tags": ["python", "rust"]}
    assert (new.event_id, new.stream_id, new.version, new.occurred_at) == (
        old.event_id, old.stream_id, old.version, old.occurred_at)
    assert "tags" not in old.data  # the stored event is not changed


def test_post_edited_1_to_2_adds_the_tags_of_the_new_text() -> None:
    new = upcasters.upcast(make("PostEdited", 1, {"text": "now #A"}, version=2))
    assert (new.schema_version, new.data) == (3, {"text": "now #A", "tags": ["a"]})


def test_schema_2_stays_2_as_written() -> None:
    # Tags written by the domain are kept as they are, even where the rule would say otherwise now.
    for event in (make("PostCreated", 2, {"post_id": "p", "author_id": "a", "text": "#x", "tags": ["kept"]}),
                  make("PostEdited", 3, {"text": "#x", "tags": []}, version=2)):
        assert upcasters.upcast(event) is event
    with pytest.raises(SchemaTooNew):
        upcasters.upcast(make("PostCreated", 3, {"text": "#x"}))


def test_a_malformed_old_event_gets_no_tags_rather_than_failing_the_upcast() -> None:
    assert upcasters.upcast(make("PostCreated", 1, {})).data == {"tags": []}
    assert upcasters.upcast(make("PostEdited", 1, {"text": None}, version=2)).data == {"text": None, "tags": []}


@pytest.mark.parametrize("seed", range(5))
def test_the_domain_writes_what_the_upcaster_computes(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = ["#", "#", "a", "B", "_", "1", " ", ".", "é", "#tag", "-", "\n"]
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        created = PostCreated(post_id="p", author_id="a", text=text).to_data()
        edited = PostEdited(text=text).to_data()
        assert created["tags"] == edited["tags"] == hashtags(text)
        old = {k: v for k, v in created.items() if k != "tags"}
        assert upcasters.upcast(make("PostCreated", 1, old)).data == created
        assert upcasters.upcast(make("PostEdited", 1, {"text": text}, version=2)).data == edited


# --- the hashtag_counts fold ---------------------------------------------------------------------

def fold_in_memory(spec: ProjectionSpec, events: list[Envelope]) -> dict[tuple[str, str], dict[str, Any]]:
    return InMemoryProjection(spec).apply(upcasters.upcast(event) for event in events).items


def counts_of(table: dict[tuple[str, str], dict[str, Any]]) -> dict[str, int]:
    return {item["tag"]: item["post_count"] for item in table.values() if item["post_count"]}


def test_the_fold_counts_live_posts_per_tag() -> None:
    a, b = "post-a", "post-b"

    def ev(sid: str, version: int, type_: str, data: dict[str, Any], schema: int = 1) -> Envelope:
        return Envelope(new_id(), sid, version, type_, schema, "posts", "2024-01-01T00:00:00.000000Z", data, {})

    events = [
        ev(a, 1, "PostCreated", {"post_id": "a", "author_id": "u", "text": "#x #y"}),  # schema 1: upcast
        ev(b, 1, "PostCreated", {"post_id": "b", "author_id": "u", "text": "#y #z", "tags": ["y", "z"]}, 2),
        ev(a, 2, "PostEdited", {"text": "#y #w"}),  # -x +w, y unchanged
        ev(b, 2, "PostDeleted", {}),  # -y -z
        ev(b, 3, "PostEdited", {"text": "#ghost"}),  # after deletion: nothing
        ev(a, 3, "Unknown", {}),
    ]
    table = fold_in_memory(hashtag_counts.PROJECTION, events)
    assert counts_of(table) == {"w": 1, "y": 1}
    assert table[hashtag_counts.tag_key("x")] == {"tag": "x", "post_count": 0}  # kept at 0
    assert hashtag_counts.tag_key("ghost") not in table


@pytest.mark.parametrize("seed", range(10))
def test_the_counts_do_not_depend_on_the_order_of_streams(seed: int) -> None:
    rng = random.Random(seed)
    vocabulary = ["a", "b", "c", "d"]
    streams: list[list[Envelope]] = []
    for n in range(15):
        sid = f"post-{n}"

        def text() -> str:
            return " ".join(f"#{t}" for t in rng.sample(vocabulary, rng.randint(0, 3)))

        stream = [Envelope(new_id(), sid, 1, "PostCreated", 1, "posts", "t", {"post_id": str(n), "author_id": "u",
                                                                               "text": text()}, {})]
        for _ in range(rng.randint(0, 3)):
            kind = rng.choice(["PostEdited", "PostEdited", "PostDeleted"])
            stream.append(Envelope(new_id(), sid, len(stream) + 1, kind, 1, "posts", "t",
                                   {"text": text()} if kind == "PostEdited" else {}, {}))
        streams.append(stream)
    reference = fold_in_memory(hashtag_counts.PROJECTION, [e for s in streams for e in s])
    live: dict[str, str | None] = {}
    for stream in streams:
        for e in stream:
            if e.type == "PostCreated" or (e.type == "PostEdited" and live[e.stream_id] is not None):
                live[e.stream_id] = e.data["text"]
            elif e.type == "PostDeleted":
                live[e.stream_id] = None
    expected: dict[str, int] = {}
    for text in live.values():
        for tag in hashtags(text or ""):
            expected[tag] = expected.get(tag, 0) + 1
    assert counts_of(reference) == expected
    for _ in range(5):
        cursors = [list(s) for s in streams]
        order: list[Envelope] = []
        while any(cursors):
            order.append(rng.choice([c for c in cursors if c]).pop(0))
        assert fold_in_memory(hashtag_counts.PROJECTION, order) == reference


# --- every reader upcasts with the contracts of the events it reads --------------------------------

@pytest.mark.parametrize("name", [p.name for _, p in TOPOLOGY.projections])
def test_a_projection_folds_its_sources_contract_classes_and_upcasts_with_their_steps(name: str) -> None:
    """No import for its side effect: the classes a projection folds bring their own schemas and steps."""
    from eventstack.replay import load_spec
    from eventstack.schemas import contract_of

    _, projection = TOPOLOGY.projection(name)
    spec = load_spec(name)
    published = {t: c for source in projection.sources for t, c in contract_of(TOPOLOGY.service(source)).classes.items()}
    for event_class in spec.folds:
        assert published.get(event_class.type) is event_class, f"{name} folds a class no source publishes"
        assert spec.registry.current_version(event_class.type) == event_class.schema_version


def test_an_api_reads_its_store_upcast_by_its_own_contract() -> None:
    from escore.app import ServiceApp
    from escore.memory_store import InMemoryEventStore
    from posts.contract import EVENTS

    store = InMemoryEventStore(EVENTS.registry)
    store.append("post-1", 0, [make("PostCreated", 1, {"post_id": "1", "author_id": "a", "text": "#x"})])
    app = ServiceApp({}, EVENTS, store=store)
    post = app.repository(Post).load("1")
    assert (post.version, post.text) == (1, "#x")
    [read] = store.read("post-1")
    assert (read.schema_version, read.data["tags"]) == (2, ["x"])
