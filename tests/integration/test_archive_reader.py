"""ArchiveReader on moto S3: pruning by the key layout, de-duplication, order, gaps, upcasting, memory."""

from __future__ import annotations

import gzip
import io
import random
import tracemalloc
from datetime import timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws
from replay_support import BUCKET, T0, History, event, gz_lines, put_object

from escore.envelope import encode_record
from escore.upcasting import UpcasterRegistry
from eventstack import archive_gzip, archive_layout
from eventstack.archive import ArchiveReader
from eventstack.archive_layout import S3Source
from eventstack.archive_partition import ReadStats
from eventstack.archive_scan import in_shard, parse_shard

pytestmark = pytest.mark.integration


@pytest.fixture
def s3() -> Any:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


class CountingSource(S3Source):
    def __init__(self, bucket: str, client: Any) -> None:
        super().__init__(bucket, client)
        self.listed: list[str] = []

    def list(self, prefix: str):  # type: ignore[no-untyped-def]
        self.listed.append(prefix)
        return super().list(prefix)


def test_listing_is_pruned_by_hour_partitions(s3: Any) -> None:
    for h in range(6):
        put_object(s3, "posts", T0 + timedelta(hours=h), "a", [event(f"post-{h}", 1, "PostCreated", {})])
    put_object(s3, "profiles", T0 + timedelta(hours=2), "a", [event("user-1", 1, "UserRegistered", {})])
    source = CountingSource(BUCKET, s3)
    reader = ArchiveReader(source=source)

    objects = reader.list("posts", T0 + timedelta(hours=2, minutes=30), T0 + timedelta(hours=4))
    assert [o.hour for o in objects] == [T0 + timedelta(hours=2), T0 + timedelta(hours=3)]
    # one LIST per hour of the range, never the bucket or the service as a whole
    assert source.listed == [archive_layout.hour_prefix("posts", T0 + timedelta(hours=h)) for h in (2, 3, 4)]

    # a long range lists day prefixes; everything before `since` is dropped from the keys
    source.listed.clear()
    assert len(reader.list("posts", T0 + timedelta(hours=1), T0 + timedelta(days=5))) == 5
    assert source.listed[0] == archive_layout.day_prefix("posts", T0) and len(source.listed) == 6
    # no since: the service prefix only (the other service is not read)
    assert [o.service for o in reader.list("posts")] == ["posts"] * 6


def test_duplicates_across_objects_are_dropped_and_streams_ordered(s3: Any) -> None:
    history = History(seed=7)
    events = history.run(300)
    rng = random.Random(1)
    shuffled = list(events)
    rng.shuffle(shuffled)  # versions of a stream land in any object, in any order
    chunks = [shuffled[i : i + 37] for i in range(0, len(shuffled), 37)]
    for n, chunk in enumerate(chunks):
        again = rng.sample(events, 5)  # redelivered in another object
        put_object(s3, "posts", T0 + timedelta(hours=n % 4), f"{n:03d}", chunk + again)
        put_object(s3, "profiles", T0 + timedelta(hours=n % 4), f"{n:03d}", [])
    reader = ArchiveReader(BUCKET, s3, workers=4)
    stats = ReadStats()
    out = [e for p in reader.read(reader.list("posts"), stats=stats) for _, evs in p.streams for e in evs]

    assert stats.ok, stats.problems()
    assert sorted(e.event_id for e in out) == sorted(e.event_id for e in events)
    assert stats.events_read == len(events) + 5 * len(chunks)
    assert stats.duplicates == 5 * len(chunks)
    by_stream: dict[str, list[int]] = {}
    for item in out:
        by_stream.setdefault(item.stream_id, []).append(item.version)
    assert all(v == list(range(1, len(v) + 1)) for v in by_stream.values())


def test_a_version_gap_is_reported_and_nothing_after_it_is_yielded(s3: Any) -> None:
    put_object(s3, "posts", T0, "a", [event("post-a", 1, "PostCreated", {}), event("post-a", 2, "PostEdited", {}),
                                       event("post-b", 2, "PostEdited", {})])
    put_object(s3, "posts", T0, "b", [event("post-a", 4, "PostEdited", {})])
    reader = ArchiveReader(BUCKET, s3)
    stats = ReadStats()
    out = [(sid, [e.version for e in evs]) for p in reader.read(reader.list("posts"), stats=stats)
           for sid, evs in p.streams]
    assert out == [("post-a", [1, 2])]
    assert not stats.ok
    assert {(g.stream_id, g.expected, g.found) for g in stats.gaps} == {("post-a", 3, 4), ("post-b", 1, 2)}
    assert any("gap" in line for line in stats.problems())

    # reading from `since`, a stream may start later than version 1; a hole inside is still a gap
    stats = ReadStats()
    list(reader.read(reader.list("posts", T0), require_start=False, stats=stats))
    assert [(g.stream_id, g.expected) for g in stats.gaps] == [("post-a", 3)]


def test_same_version_with_two_ids_and_bad_lines_are_errors(s3: Any) -> None:
    first = event("post-a", 1, "PostCreated", {})
    body = encode_record(first) + b"not json\n" + encode_record(event("post-a", 1, "PostCreated", {}))
    s3.put_object(Bucket=BUCKET, Key=archive_layout.hour_prefix("posts", T0) + "x.gz", Body=gzip.compress(body))
    s3.put_object(Bucket=BUCKET, Key=archive_layout.hour_prefix("posts", T0) + "y.gz", Body=gz_lines([first])[:20])
    reader = ArchiveReader(BUCKET, s3)
    stats = ReadStats()
    list(reader.read(reader.list("posts"), stats=stats))
    assert stats.bad_lines == 1 and len(stats.conflicts) == 1 and len(stats.bad_objects) == 1
    assert not stats.ok


def test_events_are_upcast_to_the_current_schema(s3: Any) -> None:
    registry = UpcasterRegistry()

    @registry.register("PostCreated", 1)
    def add_tags(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "tags": [w[1:] for w in data["text"].split() if w.startswith("#")]}

    put_object(s3, "posts", T0, "a", [
        event("post-a", 1, "PostCreated", {"post_id": "a", "author_id": "u", "text": "hi #x #y"}),
        event("post-b", 1, "PostCreated", {"post_id": "b", "author_id": "u", "text": "hi", "tags": []},
              schema_version=2),
    ])
    reader = ArchiveReader(BUCKET, s3, upcaster=registry)
    out = list(reader.read_all(["posts"]))
    assert {e.schema_version for e in out} == {2}
    assert [e.data["tags"] for e in out] == [["x", "y"], []]


def test_spilled_partitions_and_shards_give_the_same_events(s3: Any, tmp_path: Any) -> None:
    events = History(seed=3).run(400)
    for n in range(0, 400, 50):
        put_object(s3, "posts", T0, f"{n:04d}", [e for e in events[n : n + 50] if e.service == "posts"])
        put_object(s3, "profiles", T0, f"{n:04d}", [e for e in events[n : n + 50] if e.service == "profiles"])
    whole = ArchiveReader(BUCKET, s3)
    objects = whole.list("posts") + whole.list("profiles")
    expected = sorted(e.event_id for e in whole.read_all(["posts", "profiles"]))
    assert len(expected) == 400

    tiny = ArchiveReader(BUCKET, s3, memory_budget=20_000, spill_dir=tmp_path)
    stats = ReadStats()
    spilled = [e.event_id for p in tiny.read(objects, stats=stats) for _, evs in p.streams for e in evs]
    assert stats.partitions > 1 and sorted(spilled) == expected
    assert list(tmp_path.iterdir()) == []  # spill files removed

    seen: list[str] = []
    for i in range(3):
        part = [e for p in whole.read(objects, shard=(i, 3)) for _, evs in p.streams for e in evs]
        assert all(in_shard(e.stream_id, (i, 3)) for e in part)
        seen += [e.event_id for e in part]
    assert sorted(seen) == expected
    assert parse_shard("2/4") == (2, 4)
    with pytest.raises(archive_layout.ArchiveError):
        parse_shard("4/4")


def test_an_object_is_streamed_with_bounded_memory() -> None:
    line = encode_record(event("post-a", 1, "PostCreated", {"text": "x" * 200}))
    count = 150_000  # about 50 MB of JSON Lines
    raw = line * count
    # two gzip members concatenated, as appended deliveries may be
    blob = gzip.compress(raw[: len(raw) // 2], compresslevel=1) + gzip.compress(raw[len(raw) // 2 :], compresslevel=1)
    del raw
    tracemalloc.start()
    try:
        seen = 0
        for got in archive_gzip.iter_lines(io.BytesIO(blob)):
            seen += 1
            assert len(got) == len(line) - 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == count
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while streaming {len(line) * count} bytes"
