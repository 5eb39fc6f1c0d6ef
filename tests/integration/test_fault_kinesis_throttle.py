"""kinesis_throttle: PutRecords answered in part, the way Kinesis answers when shards are throttled.

Against moto's server through a plain boto3 client of the default session (as the publisher makes
its own): inside `Faults.throttling()` each record fails with probability P, is not written, and
comes back in its place with ErrorCode and ErrorMessage; FailedRecordCount counts them. Outside, or
in another thread, nothing changes. (The publisher's handling of such answers: test_publisher.py;
the whole pipeline throttled: tests/e2e/test_fault_accounting.py.)
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from eventstack.local.emulation import FAKE_CREDENTIALS, MotoEmulation
from eventstack.local.faults import THROTTLE_CODE, Faults, FaultSettings, install_kinesis_throttle
from tests.e2e.fault_accounting import read_stream

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def aws() -> Iterator[MotoEmulation]:
    emulation = MotoEmulation(port=0)
    emulation.start()
    install_kinesis_throttle()
    yield emulation
    emulation.stop()


def stream(aws: MotoEmulation) -> tuple[str, Any]:
    """A new stream, and a client made as a function makes its own: boto3.client(...)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    aws.client("kinesis").create_stream(StreamName=name, ShardCount=2)
    client = boto3.client("kinesis", endpoint_url=aws.endpoint_url, region_name="us-east-1", **FAKE_CREDENTIALS)
    return name, client


def records(n: int) -> list[dict[str, Any]]:
    return [{"Data": f"record {i}".encode(), "PartitionKey": f"key-{i}"} for i in range(n)]


def test_a_throttled_answer_is_partial_in_place_and_only_the_rest_is_written(aws: MotoEmulation) -> None:
    name, client = stream(aws)
    faults = Faults(FaultSettings(kinesis_throttle=0.4, seed=3))
    sent = records(30)
    with faults.throttling():
        answer = client.put_records(StreamName=name, Records=sent)
    entries = answer["Records"]
    failed = [i for i, e in enumerate(entries) if "ErrorCode" in e]
    assert len(entries) == 30 and 0 < len(failed) < 30
    assert answer["FailedRecordCount"] == len(failed) == faults.throttled
    for i, entry in enumerate(entries):
        if i in failed:
            assert entry["ErrorCode"] == THROTTLE_CODE and "Rate exceeded" in entry["ErrorMessage"]
            assert "SequenceNumber" not in entry
        else:
            assert entry["SequenceNumber"] and entry["ShardId"].startswith("shardId-")
    written = sorted(r["Data"] for r in read_stream(aws.client("kinesis"), name))
    assert written == sorted(sent[i]["Data"] for i in range(30) if i not in failed)


def test_every_record_throttled_sends_nothing_and_answers_all_failed(aws: MotoEmulation) -> None:
    name, client = stream(aws)
    with Faults(FaultSettings(kinesis_throttle=1.0)).throttling():
        answer = client.put_records(StreamName=name, Records=records(3))
    assert answer["FailedRecordCount"] == 3
    assert [e["ErrorCode"] for e in answer["Records"]] == [THROTTLE_CODE] * 3
    assert read_stream(aws.client("kinesis"), name) == []


def test_outside_the_block_and_in_other_threads_nothing_is_throttled(aws: MotoEmulation) -> None:
    name, client = stream(aws)
    faults = Faults(FaultSettings(kinesis_throttle=1.0))
    answers: list[Any] = []
    with faults.throttling():
        other = threading.Thread(target=lambda: answers.append(client.put_records(StreamName=name, Records=records(2))))
        other.start()
        other.join()
    answers.append(client.put_records(StreamName=name, Records=records(2)))
    assert [a["FailedRecordCount"] for a in answers] == [0, 0]
    assert faults.throttled == 0 and len(read_stream(aws.client("kinesis"), name)) == 4
