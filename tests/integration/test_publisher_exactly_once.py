"""Each event exactly once on Kinesis, whatever happens to the publisher between its PutRecords calls:
a crash after any call, in-process retries running out, a PutRecords whose answer is lost, a retry in
another container, `eventstack dlq redrive`. After the batch's next attempt, each stream on Kinesis is
v1..vn, each version once, in order (moto: the event store's real stream records in, real Kinesis out)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from replay_support import BUCKET
from test_publisher import (
    STREAM,
    FlakyKinesis,
    assert_exactly_once_in_order,
    change_records,
    event,
    first_sequence,
    kinesis_contents,
    marks,
    publisher,
    publisher_aws,
    put_claim,
    put_event,
)
from typer.testing import CliRunner

from escore.envelope import Envelope, new_id
from eventstack import resources
from eventstack.cli import app
from publisher.handler import MAX_ATTEMPTS, Publisher, build
from publisher.marks import MARK_KIND, MARK_TTL_SECONDS, AttemptMarks

pytestmark = pytest.mark.integration

NO_SLEEP = {"sleep": lambda _: None}


class Crash(BaseException):
    """The function dies (a timeout, an out-of-memory kill): nothing of the invocation runs on."""


class CrashingKinesis:
    """The real client, except that the process dies right after the k-th PutRecords call was
    written (k = 0: before the first one), its answer never seen."""

    def __init__(self, client: Any, crash_after: int | None) -> None:
        self._client, self.crash_after, self.calls = client, crash_after, 0

    def put_records(self, **request: Any) -> Any:
        if self.crash_after == 0:
            raise Crash("before the first PutRecords")
        answer = self._client.put_records(**request)
        self.calls += 1
        if self.calls == self.crash_after:
            raise Crash(f"after PutRecords call {self.calls}")
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class LostAnswers:
    """PutRecords calls that raise as a timeout or a lost connection does: `written` says what the
    first such call wrote before raising ("all", "some" (its first half) or "none")."""

    def __init__(self, client: Any, written: str, failing_calls: int = 1) -> None:
        self._client, self.written, self.failing = client, written, failing_calls
        self.calls: list[list[str]] = []

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> Any:
        self.calls.append([r["PartitionKey"] for r in Records])
        if self.failing <= 0:
            return self._client.put_records(StreamName=StreamName, Records=Records)
        self.failing -= 1
        part = {"all": Records, "some": Records[: len(Records) // 2], "none": []}[self.written]
        if part:
            self._client.put_records(StreamName=StreamName, Records=part)
        if self.written == "none":
            raise EndpointConnectionError(endpoint_url="https://kinesis.us-east-1.amazonaws.com")
        raise ReadTimeoutError(endpoint_url="https://kinesis.us-east-1.amazonaws.com")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    yield from publisher_aws(2)


def a_history(aws: dict[str, Any], lengths: tuple[int, ...] = (4, 3, 1, 2)) -> tuple[dict[str, list[Envelope]],
                                                                                    list[dict[str, Any]]]:
    """Streams with these many events, interleaved as a busy store writes them, with a claim
    between; returns the events per stream and the DynamoDB stream records (one batch)."""
    written: dict[str, list[Envelope]] = {f"post-{new_id()}": [] for _ in lengths}
    goal = dict(zip(written, lengths, strict=True))
    for round_ in range(max(lengths)):
        for stream_id, events in written.items():
            if len(events) < goal[stream_id]:
                envelope = event(stream_id, len(events) + 1)
                put_event(aws, envelope)
                events.append(envelope)
        if round_ == 0:
            put_claim(aws, f"h-{new_id()}")
    return written, change_records(aws)


# --- crashes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("crash_after", [0, 1, 2, 3, 4])
def test_a_crash_after_any_putrecords_call_then_the_retry_publishes_each_event_once(
    aws: dict[str, Any], crash_after: int
) -> None:
    written, records = a_history(aws)  # 4 rounds: PutRecords calls of 4, 3, 2 and 1 records
    crashing = CrashingKinesis(aws["kinesis"], crash_after)
    with pytest.raises(Crash):
        build(aws["env"], kinesis=crashing, **NO_SLEEP)({"Records": records}, None)
    assert crashing.calls == crash_after
    before = sum(len(rows) for rows in kinesis_contents(aws["kinesis"]).values())

    # No bisect on the publisher's mapping: the same batch comes again, from the same first record.
    result = publisher(aws).publish(records)

    assert result.response() == {"batchItemFailures": []}
    assert result.reattempt and result.already_published == before == [0, 4, 7, 9, 10][crash_after]
    assert result.published == 10 - before
    assert_exactly_once_in_order(kinesis_contents(aws["kinesis"]), written)
    assert len(marks(aws)) == 1


def test_a_batch_of_old_records_with_a_new_first_record_is_read_back(aws: dict[str, Any]) -> None:
    """The mapping formed another batch of records an earlier one already attempted (records past
    the maximum age split off to the DLQ, a recreated mapping re-reading the stream): its first
    record has no mark, but its records are old, so they are read back before anything is sent."""
    written, records = a_history(aws)
    with pytest.raises(Crash):
        build(aws["env"], kinesis=CrashingKinesis(aws["kinesis"], 2), **NO_SLEEP)({"Records": records}, None)
    later = records[1:]  # another first record: a first mark, no earlier attempt known
    from publisher.handler import STALE_SECONDS, _created

    created = max(_created(r) for r in later)

    old = Publisher(aws["kinesis"], STREAM, marks=AttemptMarks(aws["dynamodb"], aws["table"]),
                    sleep=lambda _: None, clock=lambda: created + STALE_SECONDS + 60)
    result = old.publish(later)
    assert result.response() == {"batchItemFailures": []} and result.already_published > 0
    publisher(aws).publish(records)  # the first record too, as its own attempt would
    assert_exactly_once_in_order(kinesis_contents(aws["kinesis"]), written)


def test_crashes_on_every_attempt_still_end_with_each_event_once(aws: dict[str, Any]) -> None:
    written, records = a_history(aws, (5, 5, 2))
    for _ in range(4):  # each attempt gets one more call through before it dies
        with pytest.raises(Crash):
            build(aws["env"], kinesis=CrashingKinesis(aws["kinesis"], 1), **NO_SLEEP)({"Records": records}, None)
    assert build(aws["env"], kinesis=aws["kinesis"], **NO_SLEEP)({"Records": records}, None) == {
        "batchItemFailures": []}
    assert_exactly_once_in_order(kinesis_contents(aws["kinesis"]), written)


def test_a_retry_in_another_container_finds_the_mark_and_reads_back(aws: dict[str, Any]) -> None:
    written, records = a_history(aws)
    with pytest.raises(Crash):
        build(aws["env"], kinesis=CrashingKinesis(aws["kinesis"], 2), **NO_SLEEP)({"Records": records}, None)

    # A fresh instance, as a new container builds it: its own boto3 clients (the writer without
    # botocore retries), nothing shared with the one that crashed but the table and the stream.
    fresh = build(aws["env"], **NO_SLEEP)
    assert fresh({"Records": records}, None) == {"batchItemFailures": []}
    assert_exactly_once_in_order(kinesis_contents(aws["kinesis"]), written)


def test_the_writer_client_never_retries_on_its_own() -> None:
    from publisher.handler import kinesis_clients

    writer, reader = kinesis_clients()
    assert writer.meta.config.retries["total_max_attempts"] == 1
    assert reader.meta.config.retries["total_max_attempts"] > 1


# --- partial failures -------------------------------------------------------------------------------


def test_partial_failures_exhausting_the_in_process_retries_then_the_retry(aws: dict[str, Any]) -> None:
    written, records = a_history(aws)
    streams = list(written)
    # v2 of the first stream and v1 of the third fail more often than one invocation retries them.
    stubborn = {written[streams[0]][1].event_id: MAX_ATTEMPTS + 2, written[streams[2]][0].event_id: MAX_ATTEMPTS}
    flaky = FlakyKinesis(aws["kinesis"], random.Random(3), fail_p=0.2, stubborn=stubborn)
    handler = build(aws["env"], kinesis=flaky, **NO_SLEEP)

    first = handler({"Records": records}, None)
    assert first == {"batchItemFailures": [{"itemIdentifier": first_sequence(records)}]}
    partly = kinesis_contents(aws["kinesis"])
    assert [env.version for _, env in partly[streams[0]]] == [1]  # v2 gave up: v3, v4 held back
    assert streams[2] not in partly

    assert handler({"Records": records}, None) == {"batchItemFailures": []}  # the mapping's retry
    assert_exactly_once_in_order(kinesis_contents(aws["kinesis"]), written)


# --- unknown outcomes -------------------------------------------------------------------------------


@pytest.mark.parametrize("written_before_raising", ["all", "some", "none"])
def test_a_putrecords_that_raises_is_read_back_before_anything_is_sent_again(
    aws: dict[str, Any], written_before_raising: str
) -> None:
    written, records = a_history(aws)
    lost = LostAnswers(aws["kinesis"], written_before_raising)
    result = publisher(aws, lost).publish(records)

    assert result.response() == {"batchItemFailures": []}
    assert result.unknown_outcomes == 1 and not result.reattempt
    assert_exactly_once_in_order(kinesis_contents(aws["kinesis"]), written)
    # Of the failed call's 4 records, only those not found on the stream were sent again.
    resent = {"all": 0, "some": 2, "none": 4}[written_before_raising]
    assert sum(len(call) for call in lost.calls) == 10 + resent


def test_a_read_back_waits_for_the_stream_to_settle_first(aws: dict[str, Any]) -> None:
    written, records = a_history(aws, (2, 1))
    slept: list[float] = []
    handler = build(aws["env"], kinesis=LostAnswers(aws["kinesis"], "all"), sleep=slept.append)
    assert handler({"Records": records}, None) == {"batchItemFailures": []}
    assert slept == [1.0]  # before the one read-back; no backoff (nothing failed for sure)
    assert_exactly_once_in_order(kinesis_contents(aws["kinesis"]), written)


def test_a_read_back_that_cannot_finish_publishes_nothing_more_and_the_retry_completes(
    aws: dict[str, Any],
) -> None:
    written, records = a_history(aws)

    class Throttled(Exception):
        def __init__(self) -> None:
            super().__init__("Rate exceeded for shard")
            self.response = {"Error": {"Code": "ProvisionedThroughputExceededException"}}

    class NoReads(LostAnswers):
        def get_records(self, **_: Any) -> Any:
            raise Throttled()

    blocked = NoReads(aws["kinesis"], "some")
    result = publisher(aws, blocked).publish(records)
    assert result.response() == {"batchItemFailures": [{"itemIdentifier": first_sequence(records)}]}
    assert len(blocked.calls) == 1  # nothing sent after the unknown outcome

    assert publisher(aws).publish(records).response() == {"batchItemFailures": []}
    assert_exactly_once_in_order(kinesis_contents(aws["kinesis"]), written)


# --- marks ------------------------------------------------------------------------------------------


def test_a_batch_with_nothing_to_publish_writes_no_mark(aws: dict[str, Any]) -> None:
    put_claim(aws, "alice")
    put_claim(aws, "bob")
    aws["dynamodb"].delete_item(TableName=aws["table"],
                                Key={"stream_id": {"S": "$claim#handle#bob"}, "version": {"N": "0"}})
    records = change_records(aws)
    result = publisher(aws).publish(records)
    assert result.response() == {"batchItemFailures": []} and result.skipped == 3
    assert marks(aws) == []


def test_the_mark_is_one_expiring_item_and_its_own_record_ends_the_chain(aws: dict[str, Any]) -> None:
    _, records = a_history(aws, (2, 2))
    before = time.time()
    assert publisher(aws).publish(records).published == 4
    (mark,) = marks(aws)
    assert mark["stream_id"]["S"] == "$publish#" + next(r["eventID"] for r in records
                                                        if r["dynamodb"]["NewImage"]["kind"]["S"] == "event")
    assert mark["version"] == {"N": "0"} and mark["kind"] == {"S": MARK_KIND}
    at, expires = int(mark["at"]["N"]), int(mark["expires_at"]["N"])
    assert int(before) <= at <= time.time() and expires == at + MARK_TTL_SECONDS == at + 2 * 24 * 3600
    ttl = aws["dynamodb"].describe_time_to_live(TableName=aws["table"])["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at" and ttl["TimeToLiveStatus"] == "ENABLED"

    # The mark's own stream record comes to the publisher too: skipped, and no mark of a mark.
    mark_records = [r for r in change_records(aws) if r["dynamodb"]["Keys"]["stream_id"]["S"].startswith("$publish#")]
    assert len(mark_records) == 1
    result = publisher(aws).publish(mark_records)
    assert (result.skipped, result.published) == (1, 0) and result.response() == {"batchItemFailures": []}
    assert len(marks(aws)) == 1


def test_a_second_run_of_a_published_batch_sends_nothing(aws: dict[str, Any]) -> None:
    """Lambda may deliver a batch again after it succeeded (at-least-once): its mark is found."""
    written, records = a_history(aws)
    assert publisher(aws).publish(records).published == 10
    again = publisher(aws).publish(records)
    assert (again.published, again.already_published, again.reattempt) == (0, 10, True)
    assert_exactly_once_in_order(kinesis_contents(aws["kinesis"]), written)


# --- dlq redrive ------------------------------------------------------------------------------------


def test_redrive_of_a_publisher_failure_resends_nothing_already_published(aws: dict[str, Any]) -> None:
    dlqs = {"posts-publisher": "posts-publisher-dlq"}
    aws["sqs"].create_queue(QueueName="posts-publisher-dlq")
    resources.publish(resources.Resources("test", BUCKET, {"posts_events": aws["table"]}, {"posts": STREAM}, dlqs),
                      aws["ssm"])
    written, records = a_history(aws)
    streams = list(written)
    # Every attempt the mapping makes fails v2 of the first stream: after its retries the batch goes
    # to the DLQ with most of it published.
    stubborn = {written[streams[0]][1].event_id: 10 * MAX_ATTEMPTS}
    handler = build(aws["env"], kinesis=FlakyKinesis(aws["kinesis"], random.Random(0), 0.0, stubborn), **NO_SLEEP)
    for _ in range(3):
        assert handler({"Records": records}, None) == {"batchItemFailures": [{"itemIdentifier": first_sequence(records)}]}
    assert sum(len(rows) for rows in kinesis_contents(aws["kinesis"]).values()) == 10 - 3

    arn = aws["dynamodb"].describe_table(TableName=aws["table"])["Table"]["LatestStreamArn"]
    shard = aws["streams"].describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    url = aws["sqs"].get_queue_url(QueueName="posts-publisher-dlq")["QueueUrl"]
    aws["sqs"].send_message(QueueUrl=url, MessageBody=json.dumps({
        "requestContext": {"requestId": "r", "functionArn": "arn:aws:lambda:x", "condition": "RetryAttemptsExhausted",
                           "approximateInvokeCount": 11},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
        "version": "1.0", "timestamp": "2025-11-26T10:00:00.000Z",
        "DDBStreamBatchInfo": {"shardId": shard, "startSequenceNumber": first_sequence(records),
                               "endSequenceNumber": records[-1]["dynamodb"]["SequenceNumber"],
                               "batchSize": len(records), "streamArn": arn},
    }))

    result = CliRunner().invoke(app, ["dlq", "redrive", "posts-publisher", "--stage", "test"])
    assert result.exit_code == 0, result.output
    assert "redriven: 1 message(s)" in result.stdout
    assert_exactly_once_in_order(kinesis_contents(aws["kinesis"]), written)
    assert len(marks(aws)) == 1  # the redrive found the mapping's mark
