"""The local Firehose: a Kinesis stream to gzip JSON Lines objects in S3 (docs/api.md, "The archive"), against moto."""

from __future__ import annotations

import gzip
import json
import re
import time
import uuid
from typing import Any

import pytest

from eventstack.local.emulation import MotoEmulation
from eventstack.local.faults import Faults, FaultSettings
from eventstack.local.firehose import FirehoseDelivery
from eventstack.local.plan import DeliveryPlan
from eventstack.local.sources import Activity, KinesisSource

pytestmark = pytest.mark.integration

KEY = re.compile(
    r"^events/service=(?P<service>[a-z]+)/year=(?P<y>\d{4})/month=(?P<m>\d{2})/day=(?P<d>\d{2})/hour=(?P<h>\d{2})/"
    r"posts-archive-1-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-[0-9a-f-]{36}\.gz$"
)


@pytest.fixture(scope="module")
def moto() -> Any:
    emulation = MotoEmulation(port=0)
    emulation.start()
    yield emulation
    emulation.stop()


def setup(moto: Any, **kwargs: Any) -> tuple[FirehoseDelivery, str, str]:
    kinesis, s3 = moto.client("kinesis"), moto.client("s3")
    stream, bucket = f"s-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    s3.create_bucket(Bucket=bucket)
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    delivery = FirehoseDelivery(DeliveryPlan("posts-archive", "posts", stream), KinesisSource(kinesis, stream, arn),
                                s3, bucket, Activity(), **kwargs)
    return delivery, stream, bucket


def envelope(i: int) -> bytes:
    return json.dumps({"event_id": str(uuid.uuid4()), "stream_id": f"post-{i}", "version": 1, "type": "PostCreated",
                       "service": "posts", "data": {"i": i}}, separators=(",", ":")).encode() + b"\n"


def objects(moto: Any, bucket: str) -> dict[str, bytes]:
    s3 = moto.client("s3")
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: gzip.decompress(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()) for o in listed}


def run_until(delivery: FirehoseDelivery, condition: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline
        delivery.tick()
        time.sleep(0.02)


def test_records_are_buffered_for_the_interval_then_written_gzip_exactly_as_published(moto: Any) -> None:
    delivery, stream, bucket = setup(moto, interval=0.5)
    kinesis = moto.client("kinesis")
    published = [envelope(i) for i in range(10)]
    for i, data in enumerate(published):
        kinesis.put_record(StreamName=stream, Data=data, PartitionKey=f"post-{i}")
    started = time.time()
    delivery.tick()
    assert objects(moto, bucket) == {}  # buffered
    run_until(delivery, lambda: delivery.records_delivered == 10)
    assert time.time() - started >= 0.4
    found = objects(moto, bucket)
    lines = [line + b"\n" for body in found.values() for line in body.split(b"\n") if line]
    assert sorted(lines) == sorted(published)
    now = time.gmtime()
    for key in found:
        match = KEY.match(key)
        assert match, key
        assert match["service"] == "posts" and int(match["y"]) == now.tm_year
    assert delivery.status()["pending"] == 0


def test_a_full_buffer_is_written_before_the_interval(moto: Any) -> None:
    delivery, stream, _bucket = setup(moto, interval=300, buffer_bytes=500)
    kinesis = moto.client("kinesis")
    for i in range(10):
        kinesis.put_record(StreamName=stream, Data=envelope(i), PartitionKey=f"post-{i}")
    run_until(delivery, lambda: delivery.records_delivered >= 5, seconds=5)


def test_unreadable_records_go_under_errors_in_firehose_error_shape(moto: Any) -> None:
    delivery, stream, bucket = setup(moto, interval=0)
    kinesis = moto.client("kinesis")
    kinesis.put_record(StreamName=stream, Data=b"not json at all", PartitionKey="x")
    kinesis.put_record(StreamName=stream, Data=envelope(1), PartitionKey="post-1")
    run_until(delivery, lambda: delivery.records_delivered == 2)
    found = objects(moto, bucket)
    errors = {k: v for k, v in found.items() if k.startswith("errors/")}
    assert len(errors) == 1 and len(found) == 2
    record = json.loads(next(iter(errors.values())))
    assert record["errorCode"].startswith("DynamicPartitioning")
    assert record["rawData"] == "bm90IGpzb24gYXQgYWxs"


def test_faults_write_objects_again_never_lose_them(moto: Any) -> None:
    delivery, stream, bucket = setup(moto, interval=0, faults=Faults(FaultSettings(duplicates=0.5, crash=0.5, seed=3)))
    kinesis = moto.client("kinesis")
    published = [envelope(i) for i in range(30)]
    for i, data in enumerate(published):
        kinesis.put_record(StreamName=stream, Data=data, PartitionKey=f"post-{i}")
        if i % 5 == 0:
            delivery.tick()
    run_until(delivery, lambda: delivery.records_delivered == 30)
    lines = {line + b"\n" for body in objects(moto, bucket).values() for line in body.split(b"\n") if line}
    assert lines == set(published)
