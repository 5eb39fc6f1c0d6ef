"""Helpers of the archive, replay and verify tests: a random history, archive objects, table dumps."""

from __future__ import annotations

import gzip
import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from escore.envelope import Envelope, encode_record, format_timestamp
from escore.memory_projection import InMemoryProjection
from escore.projection import ProjectionSpec
from escore.readmodel import from_item, is_tombstone
from eventstack.archive_layout import hour_prefix
from posts.contract import hashtags
from tests.support.projectors import upcasters

Handler = Callable[[dict[str, Any], Any], Any]

BUCKET = "eventstack-archive-test"
T0 = datetime(2025, 11, 20, 8, 0, tzinfo=UTC)


def event(
    stream_id: str,
    version: int,
    type_: str,
    data: dict[str, Any],
    *,
    service: str | None = None,
    at: datetime = T0,
    schema_version: int = 1,
    event_id: str | None = None,
) -> Envelope:
    service = service or ("posts" if stream_id.startswith("post-") else "profiles")
    return Envelope(
        event_id or str(uuid.uuid4()), stream_id, version, type_, schema_version, service,
        format_timestamp(at), data, {"correlation_id": str(uuid.uuid4())},
    )


class History:
    """A random, valid history of the posts and profiles services, in commit order.

    Events are written as the current code writes them (PostCreated at schema 2, PostEdited at 3,
    PostDeleted at 2: each carries what its folds need); with `legacy`, that share of the posts
    events is written as the first deployment did (schema 1: no tags, no author in an edit or a
    deletion), which only a fold with per-stream state (replay) can apply.
    """

    def __init__(self, seed: int, start: datetime = T0, *, legacy: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.clock = start
        self.legacy = legacy
        self.events: list[Envelope] = []
        self.users: list[str] = []
        self.posts: dict[str, dict[str, Any]] = {}  # post_id -> {"version", "live", "author", "created_at", "text"}
        self.user_versions: dict[str, int] = {}

    def _tick(self) -> datetime:
        self.clock += timedelta(milliseconds=self.rng.randint(1, 2000))
        return self.clock

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _text(self) -> str:
        tags = self.rng.sample(["python", "aws", "rust", "go", "cdk"], self.rng.randint(0, 2))
        return " ".join([f"hello {self.rng.randint(0, 10**6)}", *(f"#{t}" for t in tags)])

    def step(self) -> Envelope:
        rng = self.rng
        roll = rng.random()
        live = [p for p, s in self.posts.items() if s["live"]]
        old = rng.random() < self.legacy
        if not self.users or roll < 0.08:
            user_id = self._uuid()
            self.users.append(user_id)
            self.user_versions[user_id] = 1
            new = event(f"user-{user_id}", 1, "UserRegistered",
                        {"user_id": user_id, "handle": f"u{len(self.users)}", "display_name": f"User {user_id[:4]}"},
                        at=self._tick(), event_id=self._uuid())
        elif roll < 0.12:
            user_id = rng.choice(self.users)
            self.user_versions[user_id] += 1
            new = event(f"user-{user_id}", self.user_versions[user_id], "DisplayNameChanged",
                        {"display_name": f"Name {rng.randint(0, 999)}"}, at=self._tick(), event_id=self._uuid())
        elif roll < 0.55 or not live:
            post_id = self._uuid()
            author = rng.choice(self.users) if rng.random() < 0.95 else self._uuid()  # an unknown author too
            at, text = self._tick(), self._text()
            self.posts[post_id] = {"version": 1, "live": True, "author": author, "created_at": format_timestamp(at),
                                   "text": text}
            data: dict[str, Any] = {"post_id": post_id, "author_id": author, "text": text}
            new = event(f"post-{post_id}", 1, "PostCreated", data if old else {**data, "tags": hashtags(text)},
                        at=at, schema_version=1 if old else 2, event_id=self._uuid())
        elif roll < 0.85:
            post_id = rng.choice(live)
            post = self.posts[post_id]
            post["version"] += 1
            text, previous = self._text(), post["text"]
            post["text"] = text
            data = {"text": text} if old else {
                "text": text, "tags": hashtags(text), "author_id": post["author"], "created_at": post["created_at"],
                "previous_tags": hashtags(previous)}
            new = event(f"post-{post_id}", post["version"], "PostEdited", data, at=self._tick(),
                        schema_version=1 if old else 3, event_id=self._uuid())
        else:
            post_id = rng.choice(live)
            post = self.posts[post_id]
            post["version"] += 1
            post["live"] = False
            data = {} if old else {"author_id": post["author"], "created_at": post["created_at"],
                                   "tags": hashtags(post["text"])}
            new = event(f"post-{post_id}", post["version"], "PostDeleted", data, at=self._tick(),
                        schema_version=1 if old else 2, event_id=self._uuid())
        self.events.append(new)
        return new

    def run(self, count: int) -> list[Envelope]:
        return [self.step() for _ in range(count)]


def gz_lines(events: Iterable[Envelope]) -> bytes:
    return gzip.compress(b"".join(encode_record(e) for e in events), compresslevel=1)


def archive_key(service: str, hour: datetime, name: str) -> str:
    return f"{hour_prefix(service, hour)}eventstack-test-{service}-archive-{name}.gz"


def put_object(s3: Any, service: str, hour: datetime, name: str, events: Sequence[Envelope],
               bucket: str = BUCKET) -> str:
    key = archive_key(service, hour, name)
    s3.put_object(Bucket=bucket, Key=key, Body=gz_lines(events))
    return key


def archive_with_duplicates(
    s3: Any, events: Sequence[Envelope], rng: random.Random, *, per_object: int = 40,
    duplicate_rate: float = 0.1, start: datetime = T0, bucket: str = BUCKET,
) -> list[str]:
    """Write `events` as Firehose would (in order, per service, chunked into objects over hours),
    with some records delivered again in a later object (at-least-once)."""
    keys: list[str] = []
    for service in ("posts", "profiles"):
        mine = [e for e in events if e.service == service]
        redelivered: list[Envelope] = []
        for n, begin in enumerate(range(0, len(mine), per_object)):
            chunk = redelivered + mine[begin : begin + per_object]
            redelivered = [e for e in mine[begin : begin + per_object] if rng.random() < duplicate_rate]
            hour = start + timedelta(hours=n // 3)
            keys.append(put_object(s3, service, hour, f"{n:05d}", chunk, bucket))
        if redelivered:
            keys.append(put_object(s3, service, start + timedelta(hours=len(mine) // per_object // 3 + 1),
                                   "tail", redelivered, bucket))
    return keys


def fold(spec: ProjectionSpec, events: Iterable[Envelope]) -> dict[tuple[str, str], dict[str, Any]]:
    """The projection as a pure fold of the unique events (each stream in version order), upcast."""
    unique: dict[str, Envelope] = {}
    for event in events:
        unique.setdefault(event.event_id, event)  # the first delivery of each event counts
    ordered = sorted(unique.values(), key=lambda e: (e.stream_id, e.version))
    return InMemoryProjection(spec).apply(upcasters.upcast(e) for e in ordered).items


def scan(client: Any, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Every raw item of a table, by key (consistent reads)."""
    items: dict[tuple[str, str], dict[str, Any]] = {}
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for raw in page["Items"]:
            items[(raw["pk"]["S"], raw["sk"]["S"])] = raw
    return items


def read_model(client: Any, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    """A projection table's read-model items as readers see them: no `$` items, no tombstones,
    no engine attributes."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for key, raw in scan(client, table).items():
        if key[0].startswith("$") or is_tombstone(raw):
            continue
        item = from_item(raw)
        item.pop("pk"), item.pop("sk")
        out[key] = item
    return out


# --- Kinesis as a Lambda event source mapping delivers it ------------------------------------


def kinesis_record(sequence: int | str, data: bytes, partition_key: str, *, stream: str = "test",
                   shard_id: str = "shardId-000000000000") -> dict[str, Any]:
    """One record of a Lambda Kinesis event (the projector harness's, with keyword arguments)."""
    from tests.integration.projector_harness import kinesis_record as record

    return record(sequence, data, partition_key, stream, shard_id)


class LiveMapping:
    """A projector's event source mapping over a (moto) Kinesis stream, as Lambda drives it with
    ReportBatchItemFailures and unbounded retries: per shard, in order, a batch after its checkpoint;
    a reported failure moves the checkpoint to just before the lowest failed record."""

    def __init__(self, kinesis: Any, stream: str, handler: Handler, *, batch_size: int = 25,
                 latest: bool = False, rng: random.Random | None = None) -> None:
        self.kinesis = kinesis
        self.stream = stream
        self.handler = handler
        self.batch_size = batch_size
        self.rng = rng
        self.checkpoints: dict[str, str | None] = {}  # shard -> last sequence number done
        self.invocations = self.refused = self.failed_batches = 0
        self.last_failures: list[str] = []
        if latest:  # starts at the tip: what the stream holds now is never delivered
            for shard in self._shards():
                it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard,
                                                ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
                records = kinesis.get_records(ShardIterator=it, Limit=10000)["Records"]
                self.checkpoints[shard] = records[-1]["SequenceNumber"] if records else None

    def _shards(self) -> list[str]:
        return [s["ShardId"] for s in self.kinesis.list_shards(StreamName=self.stream)["Shards"]]

    def batch(self, shard: str, size: int | None = None) -> list[dict[str, Any]]:
        """The next batch of `shard` (not delivered)."""
        after = self.checkpoints.get(shard)
        kwargs: dict[str, Any] = {"StreamName": self.stream, "ShardId": shard}
        if after is None:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=after)
        it = self.kinesis.get_shard_iterator(**kwargs)["ShardIterator"]
        limit = size or (self.rng.randint(1, self.batch_size) if self.rng else self.batch_size)
        items = self.kinesis.get_records(ShardIterator=it, Limit=limit)["Records"]
        return [kinesis_record(i["SequenceNumber"], i["Data"], i["PartitionKey"], stream=self.stream, shard_id=shard)
                for i in items]

    def deliver(self, shard: str, records: list[dict[str, Any]]) -> list[str]:
        """Invoke the handler on `records` of `shard`; move the checkpoint as Lambda would; the failed ones."""
        if not records:
            return []
        self.invocations += 1
        response = self.handler({"Records": records}, None)
        failures = [f["itemIdentifier"] for f in response["batchItemFailures"]]
        if not failures:
            self.checkpoints[shard] = records[-1]["kinesis"]["sequenceNumber"]
            return []
        self.failed_batches += 1
        self.last_failures = failures
        if len(failures) == len(records):
            self.refused += 1  # (or every record failed)
        lowest = min(int(f) for f in failures)
        done = [r for r in records if int(r["kinesis"]["sequenceNumber"]) < lowest]
        if done:
            self.checkpoints[shard] = done[-1]["kinesis"]["sequenceNumber"]
        return failures

    def step(self) -> int:
        """One batch per shard; the records delivered without failure."""
        moved = 0
        for shard in self._shards():
            records = self.batch(shard)
            failed = self.deliver(shard, records)
            moved += len(records) - len(failed)
        return moved

    def drain(self, max_steps: int = 10_000) -> None:
        """Until every shard is delivered to its tip without failure."""
        for _ in range(max_steps):
            if all(not self.batch(shard, 1) for shard in self._shards()):
                return
            self.step()
        raise AssertionError(f"the mapping did not drain: {self.last_failures[:3]}")
