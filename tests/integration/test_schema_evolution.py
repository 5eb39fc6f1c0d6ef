"""Schema evolution end to end, and a projection backfilled from history then kept live.

An old deployment wrote PostCreated/PostEdited at schema 1 (no `tags`); they sit in the event store
and in the archive (gzip JSON Lines on S3, as Firehose delivers them, duplicates included). The
current code reads them through the upcaster (`posts.schemas`): the archive reader, the event store
and the projectors all see schema 2, with `tags`, and new events are written at schema 2.
`hashtag_counts` did not exist when those events were written: it is built from the archive while
`user_timeline` is live, then kept in sync by its live projector.
"""

from __future__ import annotations

import gzip
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from escore.dynamodb_store import DynamoDBEventStore
from escore.envelope import Envelope, encode_record, format_timestamp, new_id
from escore.projection import (
    InMemoryProjection,
    ProjectionSpec,
    Projector,
    StreamState,
    Write,
    from_item,
)
from eventstack.archive import ArchiveReader, ReadStats
from eventstack.local.emulation import tuned_moto_dynamodb
from posts import api as posts_api
from posts.projectors import hashtag_counts
from posts.readmodels import HashtagReadModel
from posts.schemas import hashtags
from profiles.projectors import user_timeline
from tests.integration.projector_harness import kinesis_record, scan
from tests.support.api import ApiClient, routes_of
from tests.support.aws import create_event_store, create_projection_table

pytestmark = pytest.mark.integration

BUCKET = "eventstack-archive"
T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def aws() -> Iterator[tuple[Any, Any]]:
    with mock_aws(), tuned_moto_dynamodb():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        yield dynamodb, s3


# --- an old deployment's history, and the archive as Firehose writes it ---------------------------

def old_history(rng: random.Random, posts: int) -> list[Envelope]:
    """Streams as the old code wrote them: schema 1 everywhere, `data` without `tags`."""
    moment = T0
    events: list[Envelope] = []

    def add(sid: str, version: int, type_: str, data: dict[str, Any]) -> None:
        nonlocal moment
        moment += timedelta(seconds=rng.randint(1, 600))
        events.append(Envelope(new_id(), sid, version, type_, 1, "posts", format_timestamp(moment), data,
                               {"correlation_id": new_id()}))

    tags = ["python", "AWS", "rust", "go"]
    for _ in range(posts):
        post = new_id()
        sid = f"post-{post}"
        text = " ".join(["old", *(f"#{t}" for t in rng.sample(tags, rng.randint(0, 3)))])
        add(sid, 1, "PostCreated", {"post_id": post, "author_id": new_id(), "text": text})
        version = 1
        for _ in range(rng.randint(0, 2)):
            version += 1
            add(sid, version, "PostEdited", {"text": f"edited #{rng.choice(tags)} #Old"})
        if rng.random() < 0.25:
            version += 1
            add(sid, version, "PostDeleted", {})
    return events


def archive(s3: Any, events: list[Envelope], *, duplicate_p: float = 0.1, rng: random.Random | None = None,
            per_object: int = 7) -> None:
    """gzip JSON Lines under events/service=posts/year=/month=/day=/hour=/, by delivery hour, with
    some objects delivered twice (Firehose is at least once)."""
    rng = rng or random.Random(0)
    for start in range(0, len(events), per_object):
        chunk = events[start:start + per_object]
        hour = datetime.fromisoformat(chunk[-1].occurred_at.replace("Z", "+00:00")) + timedelta(minutes=2)
        prefix = f"events/service=posts/year={hour:%Y}/month={hour:%m}/day={hour:%d}/hour={hour:%H}/"
        body = gzip.compress(b"".join(encode_record(e) for e in chunk))
        copies = 2 if rng.random() < duplicate_p else 1
        for copy in range(copies):
            key = f"{prefix}posts-archive-1-{hour:%Y-%m-%d-%H-%M-%S}-{start:06d}-{copy}.gz"
            s3.put_object(Bucket=BUCKET, Key=key, Body=body)


class Recorder:
    """Wraps a projection's folds and keeps every event they are given."""

    def __init__(self, spec: ProjectionSpec) -> None:
        self.seen: list[Envelope] = []

        def wrap(fold: Any) -> Any:
            def recorded(state: StreamState, event: Envelope) -> tuple[StreamState, list[Write]]:
                self.seen.append(event)
                result: tuple[StreamState, list[Write]] = fold(state, event)
                return result
            return recorded

        self.spec = ProjectionSpec(spec.name, {t: wrap(f) for t, f in spec.folds.items()})


def assert_schema_2_with_tags(events: list[Envelope]) -> None:
    assert events
    for event in events:
        if event.type in ("PostCreated", "PostEdited"):
            assert event.schema_version == 2, event
            assert event.data["tags"] == hashtags(event.data["text"]), event


def expected_counts(events: list[Envelope]) -> dict[str, int]:
    live: dict[str, str | None] = {}
    for e in sorted({e.event_id: e for e in events}.values(), key=lambda e: (e.stream_id, e.version)):
        if e.type == "PostCreated" or (e.type == "PostEdited" and live.get(e.stream_id) is not None):
            live[e.stream_id] = e.data["text"]
        elif e.type == "PostDeleted":
            live[e.stream_id] = None
    return dict(Counter(t for text in live.values() if text is not None for t in hashtags(text)))


def pure_fold(spec: ProjectionSpec, events: list[Envelope]) -> dict[tuple[str, str], dict[str, Any]]:
    from escore.upcasting import upcasters

    unique = sorted({e.event_id: e for e in events}.values(), key=lambda e: (e.stream_id, e.version))
    return InMemoryProjection(spec).apply(upcasters.upcast(e) for e in unique).items


def table_items(client: Any, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {key: {k: v for k, v in from_item(item).items() if k not in ("pk", "sk")}
            for key, item in scan(client, table).items() if not key[0].startswith("$")}


def counts_in(client: Any, table: str) -> dict[str, int]:
    return {i["tag"]: i["post_count"] for i in table_items(client, table).values() if i["post_count"]}


# --- schema evolution -------------------------------------------------------------------------------

def test_archived_schema_1_events_reach_the_projection_at_schema_2(aws: tuple[Any, Any]) -> None:
    dynamodb, s3 = aws
    rng = random.Random(3)
    history = old_history(rng, 40)
    archive(s3, history, duplicate_p=0.3, rng=rng)
    create_projection_table(dynamodb, "hashtag_counts")

    stats = ReadStats()
    read = list(ArchiveReader(BUCKET, s3).read_all(["posts"], stats=stats))
    assert stats.ok and stats.duplicates > 0 and stats.events == len(history)
    assert_schema_2_with_tags(read)  # the archive reader upcasts
    assert {e.event_id for e in read} == {e.event_id for e in history}

    recorder = Recorder(hashtag_counts.PROJECTION)
    result = Projector(recorder.spec, "hashtag_counts", dynamodb).apply(read)
    assert (result.failed, result.applied) == ([], len(history))
    assert_schema_2_with_tags(recorder.seen)  # what the fold sees
    assert counts_in(dynamodb, "hashtag_counts") == expected_counts(history) != {}


def test_raw_schema_1_records_are_upcast_by_the_live_projector(aws: tuple[Any, Any]) -> None:
    """The live path (Kinesis records of old events, as a stream still holding them delivers)."""
    dynamodb, _ = aws
    history = old_history(random.Random(4), 20)
    create_projection_table(dynamodb, "hashtag_counts")
    recorder = Recorder(hashtag_counts.PROJECTION)
    from escore.projection import kinesis_handler

    handler = kinesis_handler(Projector(recorder.spec, "hashtag_counts", dynamodb))
    records = [kinesis_record(n, encode_record(e), e.stream_id) for n, e in enumerate(history, start=1)]
    assert handler({"Records": records}, None) == {"batchItemFailures": []}
    assert all(e.schema_version == 1 and "tags" not in e.data for e in history)  # as written
    assert_schema_2_with_tags(recorder.seen)
    assert counts_in(dynamodb, "hashtag_counts") == expected_counts(history)


def test_the_new_code_continues_old_streams_at_schema_2(aws: tuple[Any, Any]) -> None:
    dynamodb, _ = aws
    store = DynamoDBEventStore(create_event_store(dynamodb, "posts"), dynamodb)
    post = new_id()
    old = [Envelope(new_id(), f"post-{post}", 1, "PostCreated", 1, "posts", format_timestamp(T0),
                    {"post_id": post, "author_id": new_id(), "text": "old #Python"}, {"correlation_id": "c"})]
    store.append(f"post-{post}", 0, old)  # as the old deployment did
    api = ApiClient(posts_api.build({}, store, hashtags=HashtagReadModel("unused", dynamodb)), routes_of("posts"))

    assert api.get(f"/posts/{post}").json["text"] == "old #Python"  # the aggregate folds the upcast event
    assert api.patch(f"/posts/{post}", {"text": "new #Rust #rust", "expected_version": 1}).status == 200
    stored = {e.version: e for e in store.iter_all()}  # as stored, not upcast
    assert (stored[1].schema_version, "tags" in stored[1].data) == (1, False)  # history is never rewritten
    assert (stored[2].schema_version, stored[2].data) == (2, {"text": "new #Rust #rust", "tags": ["rust"]})
    read = store.read(f"post-{post}")  # the store's read upcasts
    assert [(e.schema_version, e.data["tags"]) for e in read] == [(2, ["python"]), (2, ["rust"])]


# --- a new projection, backfilled from the archive, then live ----------------------------------------

def test_backfill_from_the_archive_then_live(aws: tuple[Any, Any]) -> None:
    dynamodb, s3 = aws
    rng = random.Random(9)
    store = DynamoDBEventStore(create_event_store(dynamodb, "posts"), dynamodb)
    for event in old_history(rng, 30):  # what the old deployment appended
        store.append(event.stream_id, event.version - 1, [event])
    timeline_table = create_projection_table(dynamodb, "user_timeline")
    live_timeline = user_timeline.build({"USER_TIMELINE_TABLE": timeline_table}, client=dynamodb)
    api = ApiClient(posts_api.build({}, store, hashtags=HashtagReadModel("hashtag_counts", dynamodb)),
                    routes_of("posts"))
    sequence = 0
    delivered: set[str] = set()

    def publish(handler: Any, events: list[Envelope], *, may_fail: bool = False) -> set[str]:
        """Kinesis delivery of `events` to a live projector (the publisher relays the store); the
        event ids whose records the handler reported failed."""
        nonlocal sequence
        records, ids = [], {}
        for event in events:
            sequence += 1
            records.append(kinesis_record(sequence, encode_record(event), event.stream_id))
            ids[str(sequence)] = event.event_id
        failed: set[str] = set()
        for start in range(0, len(records), 25):
            response = handler({"Records": records[start:start + 25]}, None)
            failed |= {ids[f["itemIdentifier"]] for f in response["batchItemFailures"]}
        assert may_fail or not failed
        return failed

    def new_commands(count: int) -> None:
        posts = [e.stream_id[5:] for e in store.iter_all() if e.type == "PostCreated"]
        for _ in range(count):
            roll = rng.random()
            if roll < 0.5 or not posts:
                text = " ".join(["new", *(f"#{t}" for t in rng.sample(["python", "Go", "cdk", "aws"], 2))])
                api.post("/posts", {"author_id": new_id(), "text": text})
            else:
                post = rng.choice(posts)
                if roll < 0.8:
                    api.patch(f"/posts/{post}", {"text": f"changed #{rng.choice(['go', 'kotlin'])}",
                                                 "expected_version": len(store.read(f"post-{post}"))})
                else:
                    api.delete(f"/posts/{post}")

    # 1. Life before the new projection: commands on the new code, user_timeline live.
    new_commands(25)
    history = sorted(store.iter_all(), key=lambda e: (e.occurred_at, e.stream_id, e.version))
    assert {e.schema_version for e in history if e.type == "PostCreated"} == {1, 2}  # old and new
    publish(live_timeline, history)
    delivered |= {e.event_id for e in history}
    archive(s3, history, duplicate_p=0.2, rng=rng)  # Firehose has delivered all of it

    # 2. hashtag_counts is deployed: its table is empty, its live mapping starts at the stream's tip.
    hashtag_table = create_projection_table(dynamodb, "hashtag_counts")
    live_hashtags = hashtag_counts.build({"HASHTAG_COUNTS_TABLE": hashtag_table}, client=dynamodb)
    assert table_items(dynamodb, hashtag_table) == {}
    new_commands(10)  # commands during the backfill: live for both projections, not yet archived
    tail = [e for e in store.iter_all() if e.event_id not in delivered]
    publish(live_timeline, tail)
    # The live hashtag projector applies the tail of streams it has whole (posts created since it was
    # deployed) and reports the others failed, "ahead of a missing predecessor": never applied out
    # of order; Lambda retries them (and, its retries spent, they go to the DLQ to be redriven).
    failed = publish(live_hashtags, tail, may_fail=True)
    born_after = {e.stream_id for e in tail if e.type == "PostCreated"}
    assert failed and failed == {e.event_id for e in tail if e.stream_id not in born_after}
    delivered |= {e.event_id for e in tail}

    # 3. Backfill from the archive (what `eventstack replay hashtag_counts --into in-place` feeds).
    stats = ReadStats()
    projector = Projector(hashtag_counts.PROJECTION, hashtag_table, dynamodb)
    archived = list(ArchiveReader(BUCKET, s3).read_all(["posts"], stats=stats))
    assert stats.ok and stats.duplicates > 0
    for start in range(0, len(archived), 40):
        assert projector.apply(archived[start:start + 40]).failed == []
    # Lambda's retry of the failed records (from the lowest one on) now applies them; what was
    # applied already, by the live projector or the backfill, is skipped by version.
    publish(live_hashtags, tail)
    everything = list(store.iter_all())
    assert table_items(dynamodb, hashtag_table) == pure_fold(hashtag_counts.PROJECTION, everything)
    assert counts_in(dynamodb, hashtag_table) == expected_counts(everything)

    # 4. Live afterwards: new commands reach both projections through their live handlers, with the
    # last archived events delivered again (the hand-off overlap): both stay equal to the fold.
    new_commands(20)
    fresh = [e for e in store.iter_all() if e.event_id not in delivered]
    overlap = archived[-10:]
    for handler in (live_hashtags, live_timeline):
        publish(handler, overlap + fresh)
    everything = list(store.iter_all())
    assert table_items(dynamodb, hashtag_table) == pure_fold(hashtag_counts.PROJECTION, everything)
    assert counts_in(dynamodb, hashtag_table) == expected_counts(everything)
    assert table_items(dynamodb, timeline_table) == pure_fold(user_timeline.PROJECTION, everything)
    for tag, count in expected_counts(everything).items():
        assert api.get(f"/tags/{tag}").json == {"tag": tag, "post_count": count}


def test_eventstack_replay_backfills_it_blue_green_then_live(aws: tuple[Any, Any]) -> None:
    """The same through `eventstack replay hashtag_counts` (`--into new`): archive, then the stream's
    tail, then the switch of the active-table pointer; the live projector and the API follow it."""
    from escore.tables import table_parameter_env, table_parameter_name
    from escore.upcasting import upcasters
    from eventstack.replay import Clients, Replayer, ReplayOptions
    from eventstack.resources import Resources

    dynamodb, s3 = aws
    kinesis, ssm = (boto3.client(name, region_name="us-east-1") for name in ("kinesis", "ssm"))
    kinesis.create_stream(StreamName="posts-events", ShardCount=1)
    rng = random.Random(21)
    # half the events as the old deployment wrote them (schema 1), half as the new one (schema 2)
    history = [upcasters.upcast(e) if rng.random() < 0.5 else e for e in old_history(rng, 40)]
    assert {e.schema_version for e in history if e.type == "PostCreated"} == {1, 2}
    cut = len(history) * 8 // 10
    archive(s3, history[:cut], duplicate_p=0.2, rng=rng)  # Firehose is behind; the stream holds the tail
    for event in history[cut * 7 // 8:]:
        kinesis.put_record(StreamName="posts-events", Data=encode_record(event), PartitionKey=event.stream_id)
    deployed = create_projection_table(dynamodb, "hashtag_counts")  # empty: the projection is new

    start = T0 + timedelta(days=30)
    ticks = iter(range(10_000))
    replayer = Replayer(
        ReplayOptions("hashtag_counts", handoff_seconds=0, batch_size=25, apply_workers=1, read_workers=2),
        Resources(stage="test", archive_bucket=BUCKET, tables={"hashtag_counts": deployed},
                  streams={"posts": "posts-events"}),
        Clients(dynamodb, s3, kinesis, ssm),
        clock=lambda: start + timedelta(minutes=next(ticks)),
    )
    summary = replayer.run()
    assert summary.ok, summary.problems + summary.failures
    assert summary.switched and summary.table != deployed
    assert table_items(dynamodb, summary.table) == pure_fold(hashtag_counts.PROJECTION, history)

    # Live afterwards, through the pointer: the projector and the API resolve the new table.
    env = {"HASHTAG_COUNTS_TABLE": deployed,
           table_parameter_env("hashtag_counts"): table_parameter_name("test", "hashtag_counts")}
    live = hashtag_counts.build(env, client=dynamodb)
    later = old_history(random.Random(22), 10)  # new posts (fresh streams) ...
    post = next(e for e in history if e.type == "PostCreated" and e.stream_id not in
                {d.stream_id for d in history if d.type == "PostDeleted"})
    version = max(e.version for e in history if e.stream_id == post.stream_id)
    later.append(Envelope(new_id(), post.stream_id, version + 1, "PostEdited", 2, "posts", format_timestamp(T0),
                          {"text": "#later", "tags": ["later"]}, {"correlation_id": "c"}))  # ... and an edit
    records = [kinesis_record(n, encode_record(e), e.stream_id) for n, e in enumerate(history[-5:] + later, 1)]
    assert live({"Records": records}, None) == {"batchItemFailures": []}
    everything = history + later
    assert table_items(dynamodb, summary.table) == pure_fold(hashtag_counts.PROJECTION, everything)
    assert table_items(dynamodb, deployed) == {}  # the old table was left alone
    api = ApiClient(posts_api.build(env, DynamoDBEventStore(create_event_store(dynamodb, "posts"), dynamodb)),
                    routes_of("posts"))
    for tag, count in {**expected_counts(everything), "later": 1}.items():
        assert api.get(f"/tags/{tag}").json == {"tag": tag, "post_count": count}
