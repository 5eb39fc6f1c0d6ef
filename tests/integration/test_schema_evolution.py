"""Schema evolution end to end, and a projection backfilled from history then kept live.

An old deployment wrote the posts events at schema 1 (no `tags`; an edit or a deletion without the
post's author, creation time or tags); they sit in the event store and in the archive (gzip JSON
Lines on S3, as Firehose delivers them, duplicates included). The current code reads them through
the upcaster (`posts.schemas`): the archive reader, the event store and the projectors all see the
current schemas, with `tags`, and new events are written at them, with the post's facts. What the
old events lack is only known from their streams' earlier events: replay folds them with per-stream
state (escore.rebuild); the live projectors, which fold each event alone, see new events only.
`hashtag_counts` did not exist when those events were written: it is built from the archive and the
stream while `user_timeline` is live, then kept in sync by its live projector.
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
from escore.engine import Projector
from escore.envelope import Envelope, encode_record, format_timestamp, new_id
from escore.memory_projection import InMemoryProjection
from escore.projection import ProjectionSpec, StreamState
from escore.readmodel import from_item, is_tombstone
from escore.rebuild import TableFold, write_fold
from escore.writes import Write
from eventstack.archive import ArchiveReader
from eventstack.archive_partition import ReadStats
from eventstack.local.emulation import tuned_moto_dynamodb
from posts import api as posts_api
from posts.contract import EVENTS as POSTS
from posts.contract import hashtags
from posts.projectors import hashtag_counts
from posts.readmodels import HashtagReadModel
from profiles.projectors import user_timeline
from tests.integration.replay_support import LiveMapping, kinesis_record, scan
from tests.support.api import ApiClient, routes_of
from tests.support.aws import create_event_store, create_projection_table
from tests.support.projectors import build_of

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
            def recorded(state: StreamState, event: Any, envelope: Envelope) -> tuple[StreamState, list[Write]]:
                self.seen.append(envelope)
                result: tuple[StreamState, list[Write]] = fold(state, event, envelope)
                return result
            return recorded

        self.spec = ProjectionSpec(spec.name, {t: wrap(f) for t, f in spec.folds.items()})


CURRENT = {"PostCreated": 2, "PostEdited": 3, "PostDeleted": 2}


def assert_current_with_tags(events: list[Envelope]) -> None:
    """Upcast to the current schemas: PostCreated 2 and PostEdited 3 with their text's tags."""
    assert events
    for event in events:
        assert event.schema_version == CURRENT[event.type], event
        if event.type in ("PostCreated", "PostEdited"):
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
    from tests.support.projectors import upcasters

    unique = sorted({e.event_id: e for e in events}.values(), key=lambda e: (e.stream_id, e.version))
    return InMemoryProjection(spec).apply(upcasters.upcast(e) for e in unique).items


def table_items(client: Any, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {key: {k: v for k, v in from_item(item).items() if k not in ("pk", "sk")}
            for key, item in scan(client, table).items() if not key[0].startswith("$") and not is_tombstone(item)}


def counts_in(client: Any, table: str) -> dict[str, int]:
    return {i["tag"]: i["post_count"] for i in table_items(client, table).values() if i["post_count"]}


# --- schema evolution -------------------------------------------------------------------------------

def test_archived_schema_1_events_reach_the_projection_at_the_current_schemas(aws: tuple[Any, Any]) -> None:
    dynamodb, s3 = aws
    rng = random.Random(3)
    history = old_history(rng, 40)
    archive(s3, history, duplicate_p=0.3, rng=rng)
    create_projection_table(dynamodb, "hashtag_counts")

    stats = ReadStats()
    read = list(ArchiveReader(BUCKET, s3).read_all(["posts"], stats=stats))
    assert stats.ok and stats.duplicates > 0 and stats.events == len(history)
    assert_current_with_tags(read)  # the archive reader upcasts
    assert {e.event_id for e in read} == {e.event_id for e in history}

    # What replay does with them: fold with per-stream state (an old edit's previous tags, an old
    # deletion's tags come from the post's earlier events), then write each item once.
    recorder = Recorder(hashtag_counts.PROJECTION)
    fold = TableFold(recorder.spec).apply(read)
    assert fold.stats.ok and fold.stats.folded + fold.stats.skipped == len(history)
    write_fold(fold, dynamodb, "hashtag_counts", "replay:0/1", {})
    assert_current_with_tags(recorder.seen)  # what the fold sees
    assert counts_in(dynamodb, "hashtag_counts") == expected_counts(history) != {}
    assert table_items(dynamodb, "hashtag_counts") == pure_fold(hashtag_counts.PROJECTION, history)


def test_raw_schema_1_records_are_upcast_by_the_live_projector(aws: tuple[Any, Any]) -> None:
    """The live path (Kinesis records of old events, as a stream still holding them delivers). It
    folds each event alone: an old PostCreated is complete once upcast; an old edit or deletion does
    not say which tags it changes, which only replay (per-stream state) can tell."""
    dynamodb, _ = aws
    history = [e for e in old_history(random.Random(4), 20) if e.type == "PostCreated"]
    create_projection_table(dynamodb, "hashtag_counts")
    recorder = Recorder(hashtag_counts.PROJECTION)
    from escore.projector_lambda import kinesis_handler

    handler = kinesis_handler(Projector(recorder.spec, "hashtag_counts", dynamodb))
    records = [kinesis_record(n, encode_record(e), e.stream_id) for n, e in enumerate(history, start=1)]
    assert handler({"Records": records}, None) == {"batchItemFailures": []}
    assert all(e.schema_version == 1 and "tags" not in e.data for e in history)  # as written
    assert_current_with_tags(recorder.seen)
    assert counts_in(dynamodb, "hashtag_counts") == expected_counts(history)


def test_the_new_code_continues_old_streams_at_the_current_schemas(aws: tuple[Any, Any]) -> None:
    dynamodb, _ = aws
    store = DynamoDBEventStore(create_event_store(dynamodb, "posts"), dynamodb, POSTS.registry)  # its contract
    post, author = new_id(), new_id()
    old = [Envelope(new_id(), f"post-{post}", 1, "PostCreated", 1, "posts", format_timestamp(T0),
                    {"post_id": post, "author_id": author, "text": "old #Python"}, {"correlation_id": "c"})]
    store.append(f"post-{post}", 0, old)  # as the old deployment did
    api = ApiClient(posts_api.build({}, store, hashtags=HashtagReadModel("unused", dynamodb)), routes_of("posts"))

    assert api.get(f"/posts/{post}").json["text"] == "old #Python"  # the aggregate folds the upcast event
    assert api.patch(f"/posts/{post}", {"text": "new #Rust #rust", "expected_version": 1}).status == 200
    stored = {e.version: e for e in store.iter_all()}  # as stored, not upcast
    assert (stored[1].schema_version, "tags" in stored[1].data) == (1, False)  # history is never rewritten
    assert stored[2].schema_version == 3
    assert {k: stored[2].data[k] for k in ("text", "tags", "author_id", "previous_tags")} == {
        "text": "new #Rust #rust", "tags": ["rust"], "author_id": author, "previous_tags": ["python"]}
    read = store.read(f"post-{post}")  # the store's read upcasts
    assert [(e.schema_version, e.data["tags"]) for e in read] == [(2, ["python"]), (3, ["rust"])]


# --- a new projection, backfilled from the archive and the stream, then live ----------------------------

def replay_of(name: str, dynamodb: Any, s3: Any, kinesis: Any, ssm: Any, tables: dict[str, str],
              **options: Any) -> Any:
    from eventstack.replay import Clients, Replayer, ReplayOptions
    from eventstack.resources import Resources

    options = {"handoff_seconds": 0, "batch_size": 25, "apply_workers": 1, "read_workers": 2,
               "fence_seconds": 0, "poll_seconds": 0.02, **options}
    start = T0 + timedelta(days=30)
    ticks = iter(range(10_000))
    return Replayer(ReplayOptions(name, **options),
                    Resources(stage="test", archive_bucket=BUCKET, tables=tables, streams={"posts": "posts-events"}),
                    Clients(dynamodb, s3, kinesis, ssm), clock=lambda: start + timedelta(minutes=next(ticks)))


def test_backfill_from_the_archive_then_live(aws: tuple[Any, Any]) -> None:
    dynamodb, s3 = aws
    kinesis, ssm = (boto3.client(name, region_name="us-east-1") for name in ("kinesis", "ssm"))
    kinesis.create_stream(StreamName="posts-events", ShardCount=1)
    rng = random.Random(9)
    store = DynamoDBEventStore(create_event_store(dynamodb, "posts"), dynamodb, POSTS.registry)  # its contract
    for event in old_history(rng, 30):  # what the old deployment appended: archived, past the stream's retention
        store.append(event.stream_id, event.version - 1, [event])
    archive(s3, list(store.iter_all()), duplicate_p=0.2, rng=rng)
    timeline_table = create_projection_table(dynamodb, "user_timeline")
    tables = {"user_timeline": timeline_table, "hashtag_counts": "hashtag_counts"}
    # the new deployment starts by rebuilding user_timeline from the archive (old events need state)
    assert replay_of("user_timeline", dynamodb, s3, kinesis, ssm, tables, into="in-place").run().ok
    live_timeline = LiveMapping(kinesis, "posts-events", build_of(user_timeline)({"USER_TIMELINE_TABLE": timeline_table},
                                                                             client=dynamodb))
    api = ApiClient(posts_api.build({}, store, hashtags=HashtagReadModel("hashtag_counts", dynamodb)),
                    routes_of("posts"))
    relayed: set[str] = {e.event_id for e in store.iter_all()}

    def publish() -> None:
        """The publisher relays what the store has not relayed yet, in commit order."""
        fresh = sorted((e for e in store.iter_all() if e.event_id not in relayed),
                       key=lambda e: (e.occurred_at, e.stream_id, e.version))
        for event in fresh:
            kinesis.put_record(StreamName="posts-events", Data=encode_record(event), PartitionKey=event.stream_id)
            relayed.add(event.event_id)

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
        publish()

    # 1. Life before the new projection: commands on the new code, user_timeline live; Firehose
    # delivers part of it.
    new_commands(25)
    live_timeline.drain()
    everything = list(store.iter_all())
    assert table_items(dynamodb, timeline_table) == pure_fold(user_timeline.PROJECTION, everything)
    archive(s3, everything[:-10], duplicate_p=0.2, rng=rng)

    # 2. hashtag_counts is deployed: its table is empty, its live mapping starts at the stream's tip.
    hashtag_table = create_projection_table(dynamodb, "hashtag_counts")
    from escore.naming import table_parameter as table_parameter_name
    from escore.naming import table_parameter_env
    from escore.projector_lambda import build_projector

    env = {"HASHTAG_COUNTS_TABLE": hashtag_table,  # as deployed: the pointer, hence the gate (cache 0.2 s)
           table_parameter_env("hashtag_counts"): table_parameter_name("test", "hashtag_counts")}
    live_hashtags = LiveMapping(kinesis, "posts-events", build_projector(
        hashtag_counts.PROJECTION, env, dynamodb, ssm_client=ssm, gate_cache_seconds=0.2, gate_wait_seconds=0),
        latest=True)
    new_commands(10)  # live for both: the new events carry their facts, so each folds alone
    live_timeline.drain()
    live_hashtags.drain()

    # 3. The backfill (`eventstack replay hashtag_counts --into in-place`), with commands arriving
    # and the live projector delivering meanwhile: held back while the table is rebuilt, then handed
    # over from the replay's tail.
    def meanwhile(phase: str) -> None:
        new_commands(2)
        live_hashtags.step()

    backfill = replay_of("hashtag_counts", dynamodb, s3, kinesis, ssm, tables, into="in-place", handoff_seconds=0.3,
                         fence_seconds=0.5)  # longer than the gate's cache
    backfill.hooks = meanwhile
    summary = backfill.run()
    assert summary.ok, summary.problems + summary.failures
    assert live_hashtags.refused > 0
    live_hashtags.drain()
    live_timeline.drain()
    everything = list(store.iter_all())
    assert table_items(dynamodb, hashtag_table) == pure_fold(hashtag_counts.PROJECTION, everything)
    assert counts_in(dynamodb, hashtag_table) == expected_counts(everything)

    # 4. Live afterwards: new commands reach both projections through their live handlers, with the
    # last records delivered again (a mapping re-delivering after a crash): both stay equal to the fold.
    new_commands(20)
    for mapping in (live_hashtags, live_timeline):
        shard = next(iter(mapping.checkpoints), None) or "shardId-000000000000"
        records = mapping.batch(shard, 10_000)
        mapping.deliver(shard, records[:15])
        mapping.checkpoints[shard] = str(int(records[0]["kinesis"]["sequenceNumber"]) - 1)  # again from there
        mapping.drain()
    everything = list(store.iter_all())
    assert table_items(dynamodb, hashtag_table) == pure_fold(hashtag_counts.PROJECTION, everything)
    assert counts_in(dynamodb, hashtag_table) == expected_counts(everything)
    assert table_items(dynamodb, timeline_table) == pure_fold(user_timeline.PROJECTION, everything)
    for tag, count in expected_counts(everything).items():
        assert api.get(f"/tags/{tag}").json == {"tag": tag, "post_count": count}


def test_eventstack_replay_backfills_it_blue_green_then_live(aws: tuple[Any, Any]) -> None:
    """The same through `eventstack replay hashtag_counts` (`--into new`): archive, then the stream's
    records up to the cut, folded with per-stream state, then the switch of the active-table pointer;
    the live projector and the API follow it."""
    from escore.naming import table_parameter as table_parameter_name
    from escore.naming import table_parameter_env
    from tests.support.projectors import upcasters

    dynamodb, s3 = aws
    kinesis, ssm = (boto3.client(name, region_name="us-east-1") for name in ("kinesis", "ssm"))
    kinesis.create_stream(StreamName="posts-events", ShardCount=1)
    rng = random.Random(21)
    # half the events as the old deployment wrote them (schema 1), half upcast (still without the facts)
    history = [upcasters.upcast(e) if rng.random() < 0.5 else e for e in old_history(rng, 40)]
    assert {e.schema_version for e in history if e.type == "PostCreated"} == {1, 2}
    cut = len(history) * 8 // 10
    archive(s3, history[:cut], duplicate_p=0.2, rng=rng)  # Firehose is behind; the stream holds the tail
    for event in history[cut * 7 // 8:]:
        kinesis.put_record(StreamName="posts-events", Data=encode_record(event), PartitionKey=event.stream_id)
    deployed = create_projection_table(dynamodb, "hashtag_counts")  # empty: the projection is new

    summary = replay_of("hashtag_counts", dynamodb, s3, kinesis, ssm, {"hashtag_counts": deployed}).run()
    assert summary.ok, summary.problems + summary.failures
    assert summary.switched and summary.table != deployed
    assert table_items(dynamodb, summary.table) == pure_fold(hashtag_counts.PROJECTION, history)

    # Live afterwards, through the pointer: the projector and the API resolve the new table.
    env = {"HASHTAG_COUNTS_TABLE": deployed,
           table_parameter_env("hashtag_counts"): table_parameter_name("test", "hashtag_counts")}
    live = LiveMapping(kinesis, "posts-events", build_of(hashtag_counts)(env, client=dynamodb))
    shard = kinesis.list_shards(StreamName="posts-events")["Shards"][0]["ShardId"]
    held = live.batch(shard, 10_000)
    live.checkpoints[shard] = held[-6]["kinesis"]["sequenceNumber"]  # the last 5 are delivered again
    later = [e for e in old_history(random.Random(22), 10) if e.type == "PostCreated"]  # new posts ...
    post = next(e for e in history if e.type == "PostCreated" and e.stream_id not in
                {d.stream_id for d in history if d.type == "PostDeleted"})
    version = max(e.version for e in history if e.stream_id == post.stream_id)
    text = next(e for e in reversed(history) if e.stream_id == post.stream_id and "text" in e.data).data["text"]
    later.append(Envelope(new_id(), post.stream_id, version + 1, "PostEdited", 3, "posts", format_timestamp(T0),
                          {"text": "#later", "tags": ["later"], "author_id": post.data["author_id"],
                           "created_at": post.occurred_at, "previous_tags": hashtags(text)},
                          {"correlation_id": "c"}))  # ... and an edit, as the new code writes it
    for event in later:
        kinesis.put_record(StreamName="posts-events", Data=encode_record(event), PartitionKey=event.stream_id)
    live.drain()
    everything = history + later
    assert table_items(dynamodb, summary.table) == pure_fold(hashtag_counts.PROJECTION, everything)
    assert table_items(dynamodb, deployed) == {}  # the old table was left alone
    api = ApiClient(posts_api.build(env, DynamoDBEventStore(create_event_store(dynamodb, "posts"), dynamodb)),
                    routes_of("posts"))
    for tag, count in {**expected_counts(everything), "later": 1}.items():
        assert api.get(f"/tags/{tag}").json == {"tag": tag, "post_count": count}
