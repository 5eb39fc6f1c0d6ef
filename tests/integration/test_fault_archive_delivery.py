"""The local Firehose when S3 fails: retried, then delivered; past the retry duration, written under
errors/service=<service>/delivery-failed/ in Firehose's error-record shape; blocked while even the
error prefix cannot be written. Against moto's server."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from eventstack.local.emulation import MotoEmulation
from eventstack.local.faults import Faults, FaultSettings
from eventstack.local.firehose import FirehoseDelivery
from eventstack.local.plan import DeliveryPlan
from eventstack.local.sources import Activity, KinesisSource
from tests.integration.test_local_firehose import envelope, moto, objects, run_until

pytestmark = pytest.mark.integration
__all__ = ["moto"]  # the module-scoped emulation fixture, shared with test_local_firehose


class FailingS3:
    """moto's S3, except that PutObject fails (503 SlowDown) while `failing` says so for the key."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.failing = lambda key: False
        self.refused: list[str] = []

    def put_object(self, **kwargs: Any) -> Any:
        if self.failing(kwargs["Key"]):
            self.refused.append(kwargs["Key"])
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."},
                               "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject")
        return self._client.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def delivery(moto: MotoEmulation, s3: Any = None, **kwargs: Any) -> tuple[FirehoseDelivery, str, str]:
    kinesis = moto.client("kinesis")
    stream, bucket = f"s-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    moto.client("s3").create_bucket(Bucket=bucket)
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    found = FirehoseDelivery(DeliveryPlan("posts-archive", "posts", stream), KinesisSource(kinesis, stream, arn),
                             s3 or moto.client("s3"), bucket, Activity(), interval=0, **kwargs)
    return found, stream, bucket


def publish(moto: MotoEmulation, stream: str, data: list[bytes]) -> None:
    for i, item in enumerate(data):
        moto.client("kinesis").put_record(StreamName=stream, Data=item, PartitionKey=f"k{i}")


def lines(found: dict[str, bytes], prefix: str) -> list[bytes]:
    return [line + b"\n" for key, body in found.items() if key.startswith(prefix) for line in body.split(b"\n") if line]


def test_a_flaky_s3_is_retried_until_every_record_is_archived(moto: MotoEmulation) -> None:
    faults = Faults(FaultSettings(archive_put_failure=0.6, seed=2))
    found, stream, bucket = delivery(moto, faults=faults)
    published = [envelope(i) for i in range(12)]
    for i, data in enumerate(published):  # one delivery (one PutObject) per record
        publish(moto, stream, [data])
        run_until(found, lambda i=i: found.records_delivered == i + 1)
    assert faults.archive_puts_failed > 0 and found.failed_attempts > 0 and found.records_given_up == 0
    assert set(lines(objects(moto, bucket), "events/service=posts/")) == set(published)
    assert not [k for k in objects(moto, bucket) if k.startswith("errors/")]


def test_past_the_retry_duration_the_records_go_under_errors_in_firehose_shape(moto: MotoEmulation) -> None:
    faults = Faults(FaultSettings(archive_put_failure=1.0, archive_retry_seconds=0.3))
    found, stream, bucket = delivery(moto, faults=faults)
    published = [envelope(i) for i in range(5)]
    publish(moto, stream, published)
    run_until(found, lambda: found.records_delivered == 5)
    stored = objects(moto, bucket)
    assert not [k for k in stored if k.startswith("events/")]
    keys = [k for k in stored if k.startswith("errors/")]
    assert keys and all(k.startswith("errors/service=posts/delivery-failed/year=") and "/hour=" in k for k in keys)
    errors = [json.loads(line) for line in lines(stored, "errors/")]
    assert sorted(base64.b64decode(e["rawData"]) for e in errors) == sorted(published)
    assert {e["errorCode"] for e in errors} == {"S3.SlowDown"}
    assert all(e["attemptsMade"] > 1 and e["kinesisStreamRecordMetadata"]["sequenceNumber"] for e in errors)
    assert found.records_given_up == found.error_records == 5 and found.status()["pending"] == 0
    assert found.failed_attempts >= 1


def test_while_even_the_error_prefix_fails_delivery_blocks_then_resumes(moto: MotoEmulation) -> None:
    s3 = FailingS3(moto.client("s3"))
    s3.failing = lambda key: True
    found, stream, bucket = delivery(moto, s3=s3, retry_seconds=0.2)
    envelope_1, envelope_2 = envelope(1), envelope(2)
    publish(moto, stream, [envelope_1, envelope_2])
    run_until(found, lambda: any(k.startswith("errors/") for k in s3.refused))
    assert found.records_delivered == 0 and found.status()["pending"] == 2  # nothing dropped
    s3.failing = lambda key: False  # S3 back: the next attempt delivers to the data prefix as usual
    run_until(found, lambda: found.records_delivered == 2)
    assert sorted(lines(objects(moto, bucket), "events/service=posts/")) == sorted([envelope_1, envelope_2])
    assert found.records_given_up == 0


def test_an_unreadable_record_counts_once_however_often_its_delivery_is_tried(moto: MotoEmulation) -> None:
    """Defect: the count of error records went up on every attempt of a failing delivery."""
    s3 = FailingS3(moto.client("s3"))
    attempts = {"n": 0}

    def fail_twice(key: str) -> bool:
        attempts["n"] += 1
        return attempts["n"] <= 2

    s3.failing = fail_twice
    found, stream, bucket = delivery(moto, s3=s3)
    publish(moto, stream, [b"not json at all", envelope(1)])
    run_until(found, lambda: found.records_delivered == 2)
    assert len(s3.refused) == 2  # the first attempt failed whole: two objects refused
    assert found.status()["error_records"] == 1
    assert len(lines(objects(moto, bucket), "errors/partitioning-failed/")) == 1


def test_a_poller_killed_mid_delivery_is_replaced_and_every_record_archived(moto: MotoEmulation) -> None:
    faults = Faults()
    faults.kill_next()  # the first delivery dies after writing part of its objects
    found, stream, bucket = delivery(moto, faults=faults)
    published = [envelope(i) for i in range(6)]
    publish(moto, stream, published)
    found.start()
    deadline = time.monotonic() + 10
    while found.records_delivered < 6:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    found.stop()
    assert found.kills == found.restarts == 1
    assert set(lines(objects(moto, bucket), "events/service=posts/")) == set(published)  # some maybe twice
