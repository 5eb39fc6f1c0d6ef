"""The hashtag_counts projector on moto: whatever the delivery (duplicates, re-delivered and failed
batches, crashes, out-of-order records, schema 1 and 2 mixed), the table ends equal to the pure fold;
and `GET /tags/{tag}` answers from it."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from escore.engine import Projector
from escore.envelope import Envelope, format_timestamp, new_id
from escore.memory_projection import InMemoryProjection
from escore.memory_store import InMemoryEventStore
from escore.readmodel import from_item
from eventstack.local.emulation import tuned_moto_dynamodb
from eventstack.topology import TOPOLOGY
from posts import api as posts_api
from posts.contract import hashtags
from posts.projectors import hashtag_counts
from posts.readmodels import HashtagReadModel
from tests.integration.projector_harness import (
    FaultyDynamoDB,
    Mapping,
    deliveries,
    drain,
    envelope,
    scan,
    shard_log,
)
from tests.support.api import ApiClient, expect_error, routes_of
from tests.support.aws import create_projection_table, create_table
from tests.support.projectors import build_of, upcasters

pytestmark = pytest.mark.integration

VOCABULARY = ["python", "rust", "go", "aws", "dynamodb", "kinesis", "Serverless", "x_1", "a" * 50]
TABLE = "hashtag_counts"


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws(), tuned_moto_dynamodb():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_projection_table(client, TABLE)
        yield client


# --- a history of posts with hashtags, schema 1 (an old deployment) and 2 mixed -----------------

def post_text(rng: random.Random) -> str:
    words = [f"#{t}" for t in rng.sample(VOCABULARY, rng.randint(0, 4))]
    words += [rng.choice(["#PYTHON", "#Rust", "plain", "a#b", "#toolong" + "x" * 50, "#café"])
              for _ in range(rng.randint(0, 2))]
    rng.shuffle(words)
    return " ".join(["post", *words])


def post_streams(rng: random.Random, posts: int, start: datetime | None = None) -> list[list[Envelope]]:
    moment = start or datetime(2024, 5, 1, tzinfo=UTC)
    streams: list[list[Envelope]] = []

    def make(sid: str, version: int, type_: str, data: dict[str, Any], schema: int) -> Envelope:
        nonlocal moment
        moment += timedelta(microseconds=rng.choice([1, 250, 1000]))
        return envelope(sid, version, type_, data, format_timestamp(moment), schema_version=schema)

    # PostCreated half as an old deployment wrote it (schema 1, upcast on the way in), half at
    # schema 2; PostEdited (3) and PostDeleted (2) as the posts domain writes them: with the facts
    # (author, creation time, the tags they replace or remove) that let each event be folded alone.
    for _ in range(posts):
        post, author, text = new_id(), new_id(), post_text(rng)
        sid = f"post-{post}"
        created = {"post_id": post, "author_id": author, "text": text}
        if rng.random() < 0.5:
            stream = [make(sid, 1, "PostCreated", created, 1)]
        else:
            stream = [make(sid, 1, "PostCreated", {**created, "tags": hashtags(text)}, 2)]
        facts = {"author_id": author, "created_at": stream[0].occurred_at}
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            new = post_text(rng)
            stream.append(make(sid, len(stream) + 1, "PostEdited",
                               {"text": new, "tags": hashtags(new), **facts, "previous_tags": hashtags(text)}, 3))
            text = new
        if rng.random() < 0.3:
            stream.append(make(sid, len(stream) + 1, "PostDeleted", {**facts, "tags": hashtags(text)}, 2))
        streams.append(stream)
    return streams


def expected_counts(events: list[Envelope]) -> dict[str, int]:
    """The plain answer, with no projection code: per tag, the live posts whose current text has it."""
    live: dict[str, str | None] = {}
    for e in sorted({e.event_id: e for e in events}.values(), key=lambda e: (e.stream_id, e.version)):
        if e.type == "PostCreated" or (e.type == "PostEdited" and live.get(e.stream_id) is not None):
            live[e.stream_id] = e.data["text"]
        elif e.type == "PostDeleted":
            live[e.stream_id] = None
    return dict(Counter(tag for text in live.values() if text is not None for tag in hashtags(text)))


def pure_fold(events: list[Envelope]) -> dict[tuple[str, str], dict[str, Any]]:
    """The projection's own fold applied in memory to the unique events, stream by stream, upcast."""
    unique = sorted({e.event_id: e for e in events}.values(), key=lambda e: (e.stream_id, e.version))
    return InMemoryProjection(hashtag_counts.PROJECTION).apply(upcasters.upcast(e) for e in unique).items


def read_model_items(client: Any, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {key: {k: v for k, v in from_item(item).items() if k not in ("pk", "sk")}
            for key, item in scan(client, table).items() if not key[0].startswith("$")}


def assert_matches_fold(client: Any, events: list[Envelope], table: str = TABLE) -> None:
    items = read_model_items(client, table)
    assert items == pure_fold(events)
    expected = expected_counts(events)
    assert {item["tag"]: item["post_count"] for item in items.values() if item["post_count"]} == expected
    model = HashtagReadModel(table, client)
    for tag in {*expected, *(t.lower() for t in VOCABULARY), "never_used"}:
        assert model.count(tag) == expected.get(tag, 0), tag
    assert not any(pk.startswith("$") for pk, _ in scan(client, table))  # no checkpoint items


# --- delivery -------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_faulty_delivery_ends_equal_to_the_fold(dynamodb: Any, seed: int) -> None:
    rng = random.Random(seed)
    streams = post_streams(rng, 80)
    events = [e for s in streams for e in s]
    faulty = FaultyDynamoDB(dynamodb, rng, fail_p=0.15, ambiguous_p=0.05, crash_p=0.05, read_fail_p=0.03)
    handler = build_of(hashtag_counts)({"HASHTAG_COUNTS_TABLE": TABLE}, client=faulty)
    # 8% of events swapped with their successor, 20% of batches delivered twice
    mapping = Mapping(handler, shard_log(rng, streams, swap_p=0.08), rng.choice([10, 25, 40]), rng, 0.2)
    drain([mapping], rng)
    assert faulty.injected["failed"] and mapping.reported_failures  # the faults did happen
    assert_matches_fold(dynamodb, events)


def test_two_shards_on_one_table_and_the_order_of_delivery_do_not_change_it(dynamodb: Any) -> None:
    streams = post_streams(random.Random(5), 60)
    events = [e for s in streams for e in s]
    create_table(dynamodb, TOPOLOGY.projection(TABLE)[1].table, "hashtag_counts-b")
    for seed, table in ((11, TABLE), (12, "hashtag_counts-b")):
        rng = random.Random(seed)
        handler = build_of(hashtag_counts)({"HASHTAG_COUNTS_TABLE": table}, client=dynamodb)
        # The stream's two shards, each with its half of the posts (by partition key), read
        # concurrently by two mappings: the tag items are shared by both.
        halves = [streams[0::2], streams[1::2]]
        mappings = []
        for shard, (half, batch) in enumerate(zip(halves, (7, 30), strict=True)):
            log = shard_log(rng, half, stream="posts-events", swap_p=0.1)
            for record in log:
                record["eventID"] = f"shardId-00000000000{shard}:{record['kinesis']['sequenceNumber']}"
            mappings.append(Mapping(handler, log, batch, rng, 0.1))
        drain(mappings, rng)
        assert_matches_fold(dynamodb, events, table)
    assert read_model_items(dynamodb, TABLE) == read_model_items(dynamodb, "hashtag_counts-b")


def test_a_post_with_the_most_tags_is_one_write_per_tag(dynamodb: Any) -> None:
    """30 tags created, then all 30 replaced (60 keys), then deleted: each tag item one write per event."""
    first = " ".join(f"#a{n}" for n in range(40))  # only the first 30 count
    second = " ".join(f"#b{n}" for n in range(40))
    sid = f"post-{new_id()}"
    facts = {"author_id": "u", "created_at": "t"}
    events = [envelope(sid, 1, "PostCreated", {"post_id": sid[5:], "author_id": "u", "text": first}, "t"),
              envelope(sid, 2, "PostEdited", {"text": second, "tags": hashtags(second), **facts,
                                              "previous_tags": hashtags(first)}, "t", schema_version=3),
              envelope(sid, 3, "PostDeleted", {**facts, "tags": hashtags(second)}, "t", schema_version=2)]
    projector = Projector(hashtag_counts.PROJECTION, TABLE, dynamodb)
    for position, event in enumerate(events, start=1):
        result = projector.apply(deliveries([event], start=position))
        assert (result.applied, result.failed) == (1, [])
        if event.version == 2:
            assert sorted(read_model_items(dynamodb, TABLE)) == sorted(
                hashtag_counts.tag_key(t) for t in [*(f"a{n}" for n in range(30)), *(f"b{n}" for n in range(30))])
            assert HashtagReadModel(TABLE, dynamodb).count("b29") == 1
            assert HashtagReadModel(TABLE, dynamodb).count("a0") == 0
    assert_matches_fold(dynamodb, events)


# --- the read route ------------------------------------------------------------------------------

def test_get_tag_counts_live_posts_from_the_projection(dynamodb: Any) -> None:
    store = InMemoryEventStore()
    # the read model found as deployed: the table's variable (escore.tables), resolved on first use
    posts = ApiClient(posts_api.build({"EVENT_STORE_TABLE": "unused", "HASHTAG_COUNTS_TABLE": TABLE}, store),
                      routes_of("posts"))
    author = new_id()

    def create(text: str) -> str:
        response = posts.post("/posts", {"author_id": author, "text": text})
        assert response.status == 201, response
        post_id: str = response.json["post_id"]
        return post_id

    one = create("hello #Python #aws")
    two = create("#python again, #python")
    create("no tags")
    posts.patch(f"/posts/{one}", {"text": "now #rust only", "expected_version": 1})
    posts.delete(f"/posts/{two}")
    assert posts.get("/tags/python").json == {"tag": "python", "post_count": 0}  # nothing projected yet

    events = list(store.iter_all())
    assert {(e.type, e.schema_version) for e in events} == {("PostCreated", 2), ("PostEdited", 3), ("PostDeleted", 2)}
    assert Projector(hashtag_counts.PROJECTION, TABLE, dynamodb).apply(deliveries(events)).failed == []
    for tag, count in (("python", 0), ("PYTHON", 0), ("rust", 1), ("Rust", 1), ("aws", 0), ("unknown", 0)):
        response = posts.get(f"/tags/{tag}")
        assert (response.status, response.json) == (200, {"tag": tag.lower(), "post_count": count}), tag
    create("#Python is back")
    Projector(hashtag_counts.PROJECTION, TABLE, dynamodb).apply(deliveries(list(store.iter_all())))
    assert posts.get("/tags/python").json == {"tag": "python", "post_count": 1}
    assert posts.get("/tags/" + "x" * 50).json == {"tag": "x" * 50, "post_count": 0}


@pytest.mark.parametrize("tag", ["a-b", "x" * 51, "caf%C3%A9", "a%20b", "a.b", "_-_"])
def test_an_invalid_tag_is_422(tag: str) -> None:
    posts = ApiClient(posts_api.build({}, InMemoryEventStore(), hashtags=_Never()), routes_of("posts"))
    body = expect_error(posts.get(f"/tags/{tag}"), 422, "validation_error")
    assert body["detail"][0]["loc"] == ["path", "tag"]


def test_routes_of_tags() -> None:
    posts = ApiClient(posts_api.build({}, InMemoryEventStore(), hashtags=_Never()), routes_of("posts"))
    assert posts.request("POST", "/tags/python", body={}).status == 405
    assert posts.get("/tags").status == 404
    assert posts.get("/tags/a/b").status == 404


class _Never:
    def count(self, tag: str) -> int:
        raise AssertionError("the read model is not read for a request that fails validation")
