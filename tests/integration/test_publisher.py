"""The publisher on moto: the event store's real DynamoDB stream records in, Kinesis out, with
PutRecords failing part-way. Per stream_id, Kinesis must carry every event exactly once, in version
order, however the mapping re-delivers (test_publisher_exactly_once.py has the crashes and lost answers)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from escore.envelope import Envelope, decode, encode, encode_record, new_id
from eventstack.topology import PUBLISHER_MAPPING, TOPOLOGY
from publisher.handler import MAX_RECORDS_PER_CALL, Publisher, build
from publisher.marks import MARK_PREFIX, AttemptMarks
from tests.support.aws import create_table

pytestmark = pytest.mark.integration

STREAM = "posts-events"


def publisher_aws(shards: int) -> Iterator[dict[str, Any]]:
    """moto with the posts event store (its stream) and a Kinesis stream of `shards` shards."""
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        table = create_table(dynamodb, TOPOLOGY.service("posts").event_store, "posts_events")
        kinesis = boto3.client("kinesis", region_name="us-east-1")
        kinesis.create_stream(StreamName=STREAM, ShardCount=shards)
        yield {"dynamodb": dynamodb, "table": table, "kinesis": kinesis,
               **{name: boto3.client(name, region_name="us-east-1") for name in ("sqs", "ssm")},
               "streams": boto3.client("dynamodbstreams", region_name="us-east-1"),
               "env": {"EVENT_STREAM_NAME": STREAM, "EVENT_STORE_TABLE": table}}


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    yield from publisher_aws(3)


def publisher(aws: dict[str, Any], kinesis: Any = None) -> Publisher:
    """A publisher as `build` wires it (attempt marks in the event store), with no sleeping."""
    return Publisher(kinesis or aws["kinesis"], STREAM, marks=AttemptMarks(aws["dynamodb"], aws["table"]),
                     sleep=lambda _: None)


def marks(aws: dict[str, Any]) -> list[dict[str, Any]]:
    items = aws["dynamodb"].scan(TableName=aws["table"])["Items"]
    return [i for i in items if i["stream_id"]["S"].startswith(MARK_PREFIX)]


def event(stream_id: str, version: int) -> Envelope:
    return Envelope(new_id(), stream_id, version, "PostEdited", 1, "posts", "2024-01-01T00:00:00.000000Z",
                    {"text": f"v{version}"}, {"correlation_id": new_id()})


def put_event(aws: dict[str, Any], envelope: Envelope, raw: str | None = None) -> None:
    aws["dynamodb"].put_item(TableName=aws["table"], Item={
        "stream_id": {"S": envelope.stream_id}, "version": {"N": str(envelope.version)},
        "kind": {"S": "event"}, "type": {"S": envelope.type}, "event_id": {"S": envelope.event_id},
        "envelope": {"S": raw if raw is not None else encode(envelope).decode()},
    })


def put_claim(aws: dict[str, Any], handle: str) -> None:
    aws["dynamodb"].put_item(TableName=aws["table"], Item={
        "stream_id": {"S": f"$claim#handle#{handle}"}, "version": {"N": "0"},
        "kind": {"S": "claim"}, "owner": {"S": "user-1"}})


def change_records(aws: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's DynamoDB stream, as the event source mapping reads it."""
    streams = aws["streams"]
    arn = aws["dynamodb"].describe_table(TableName=aws["table"])["Table"]["LatestStreamArn"]
    records: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            records.extend(page["Records"])
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    return records


def first_sequence(records: list[dict[str, Any]]) -> str:
    return str(records[0]["dynamodb"]["SequenceNumber"])


def kinesis_contents(kinesis: Any) -> dict[str, list[tuple[bytes, Envelope]]]:
    """Per partition key, the records in shard order (sequence numbers compared as numbers)."""
    out: dict[str, list[tuple[int, bytes, Envelope]]] = defaultdict(list)
    for shard in kinesis.describe_stream(StreamName=STREAM)["StreamDescription"]["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=STREAM, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            for record in page["Records"]:
                out[record["PartitionKey"]].append(
                    (int(record["SequenceNumber"]), record["Data"], decode(record["Data"])))
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    return {key: [(data, env) for _, data, env in sorted(rows, key=lambda r: r[0])] for key, rows in out.items()}


class FlakyKinesis:
    """PutRecords that fails some records (as Kinesis does, ProvisionedThroughputExceeded per
    record) and writes the rest; `stubborn` events fail that many times first. Reads go to moto."""

    def __init__(self, client: Any, rng: random.Random, fail_p: float, stubborn: dict[str, int] | None = None):
        self._client, self._rng, self.fail_p = client, rng, fail_p
        self.stubborn = dict(stubborn or {})
        self.calls: list[list[str]] = []
        self.failed_records = 0

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        keys = [r["PartitionKey"] for r in Records]
        self.calls.append(keys)
        assert len(Records) <= MAX_RECORDS_PER_CALL
        assert len(set(keys)) == len(keys), "two records of one stream in one PutRecords call"
        fail = []
        for record in Records:
            event_id = decode(record["Data"]).event_id
            if self.stubborn.get(event_id, 0) > 0:
                self.stubborn[event_id] -= 1
                fail.append(True)
            else:
                fail.append(self._rng.random() < self.fail_p)
        sent = [r for r, f in zip(Records, fail, strict=True) if not f]
        answers = iter(self._client.put_records(StreamName=StreamName, Records=sent)["Records"] if sent else [])
        out = []
        for failed in fail:
            if failed:
                self.failed_records += 1
                out.append({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "injected"})
            else:
                out.append(next(answers))
        return {"FailedRecordCount": sum(fail), "Records": out}

    def __getattr__(self, name: str) -> Any:  # ListShards, GetShardIterator, GetRecords: the read-back
        return getattr(self._client, name)


def run_mapping(handler: Any, records: list[dict[str, Any]], batch_size: int) -> int:
    """Drive the handler as a DynamoDB Streams event source mapping with ReportBatchItemFailures:
    after a partial failure, the next batch starts at the reported record (the publisher always
    reports its batch's first one). Returns the invocations."""
    position, invocations = 0, 0
    while position < len(records):
        batch = records[position:position + batch_size]
        response = handler({"Records": batch}, None)
        invocations += 1
        assert invocations < 1_000, "the mapping did not drain"
        failures = response["batchItemFailures"]
        if failures:
            lowest = min(int(f["itemIdentifier"]) for f in failures)
            position = next(i for i, r in enumerate(records) if int(r["dynamodb"]["SequenceNumber"]) == lowest)
        else:
            position += len(batch)
    return invocations


def assert_exactly_once_in_order(contents: dict[str, list[tuple[bytes, Envelope]]],
                                 written: dict[str, list[Envelope]]) -> None:
    """Per stream, Kinesis holds v1..vn, each once, in shard order, byte for byte."""
    assert set(contents) == set(written)
    for stream_id, events in written.items():
        assert [env.version for _, env in contents[stream_id]] == list(range(1, len(events) + 1)), stream_id
        for data, envelope in contents[stream_id]:
            assert envelope == events[envelope.version - 1] and data == encode_record(envelope)


@pytest.mark.parametrize("seed", [1, 2])
def test_partial_putrecords_failures_keep_order_and_lose_nothing(aws: dict[str, Any], seed: int) -> None:
    rng = random.Random(seed)
    written: dict[str, list[Envelope]] = defaultdict(list)
    streams = [f"post-{new_id()}" for _ in range(40)]
    for i in range(320):
        stream_id = rng.choice(streams[: 5 + i // 8])  # a few busy streams, more over time
        envelope = event(stream_id, len(written[stream_id]) + 1)
        put_event(aws, envelope)
        written[stream_id].append(envelope)
        if i % 50 == 0:
            put_claim(aws, f"h{i}")  # non-event items are skipped
    aws["dynamodb"].delete_item(TableName=aws["table"],
                                Key={"stream_id": {"S": "$claim#handle#h0"}, "version": {"N": "0"}})
    records = change_records(aws)
    # Three events fail more often than the publisher retries in process: the invocation gives up
    # on them and Lambda re-delivers from there.
    stubborn = {written[s][0].event_id: 6 for s in streams[:3]}
    kinesis = FlakyKinesis(aws["kinesis"], rng, fail_p=0.25, stubborn=stubborn)
    handler = build(aws["env"], kinesis=kinesis, sleep=lambda _: None)

    invocations = run_mapping(handler, records, PUBLISHER_MAPPING.batch_size)

    assert kinesis.failed_records > 50 and invocations > len(records) / PUBLISHER_MAPPING.batch_size
    contents = kinesis_contents(aws["kinesis"])
    assert_exactly_once_in_order(contents, written)
    # Re-delivery from the batch's first record re-sent nothing the earlier attempts had published.
    copies = Counter(env.event_id for rows in contents.values() for _, env in rows)
    assert set(copies.values()) == {1}
    # One attempt mark per batch (the re-deliveries found theirs), not one per invocation.
    assert len(marks(aws)) < invocations


def test_an_undecodable_record_is_reported_and_holds_back_its_stream_only(aws: dict[str, Any]) -> None:
    s, t = f"post-{new_id()}", f"post-{new_id()}"
    s1, s2, s3, t1 = event(s, 1), event(s, 2), event(s, 3), event(t, 1)
    put_event(aws, s1)
    put_event(aws, s2, raw="{not json")
    put_claim(aws, "alice")
    put_event(aws, s3)
    put_event(aws, t1)
    records = change_records(aws)
    result = publisher(aws, FlakyKinesis(aws["kinesis"], random.Random(0), 0.0)).publish(records)
    # The batch fails from its FIRST record (the retry starts there; its mark keeps it from re-sending).
    assert result.response() == {"batchItemFailures": [{"itemIdentifier": first_sequence(records)}]}
    assert result.unpublished == [records[1]["dynamodb"]["SequenceNumber"], records[3]["dynamodb"]["SequenceNumber"]]
    assert (result.published, result.skipped, result.undecodable) == (2, 1, 1)
    contents = kinesis_contents(aws["kinesis"])
    assert [env.version for _, env in contents[s]] == [1]  # s3 waits behind the bad s2
    assert [env for _, env in contents[t]] == [t1]

    # Every retry fails the same way (until the mapping sends the batch to the DLQ) and re-sends nothing.
    again = publisher(aws).publish(records)
    assert again.response() == result.response()
    assert (again.published, again.already_published, again.undecodable) == (0, 2, 1)
    assert kinesis_contents(aws["kinesis"]) == contents


def test_a_record_without_a_stream_holds_back_everything_after_it(aws: dict[str, Any]) -> None:
    good = event(f"post-{new_id()}", 1)
    put_event(aws, good)
    records = change_records(aws)
    broken = {"eventName": "INSERT", "dynamodb": {"SequenceNumber": "5", "NewImage": {"kind": {"S": "event"}}}}
    after = dict(records[0], dynamodb=dict(records[0]["dynamodb"], SequenceNumber="7"))
    result = publisher(aws).publish([broken, after])
    assert result.response() == {"batchItemFailures": [{"itemIdentifier": "5"}]}
    assert result.published == 0 and result.unpublished == ["5", "7"]
    assert marks(aws) == []  # nothing was to be put: no attempt mark


def test_calls_are_chunked_at_500_records(aws: dict[str, Any]) -> None:
    envelopes = [event(f"post-{i}", 1) for i in range(1_150)]
    records = [{"eventName": "INSERT", "dynamodb": {
        "SequenceNumber": str(100 + i),
        "Keys": {"stream_id": {"S": e.stream_id}, "version": {"N": "1"}},
        "NewImage": {"stream_id": {"S": e.stream_id}, "version": {"N": "1"}, "kind": {"S": "event"},
                     "envelope": {"S": encode(e).decode()}}}} for i, e in enumerate(envelopes)]
    kinesis = FlakyKinesis(aws["kinesis"], random.Random(0), 0.0)
    result = publisher(aws, kinesis).publish(records)
    assert result.published == 1_150 and result.response() == {"batchItemFailures": []}
    assert [len(call) for call in kinesis.calls] == [500, 500, 150]


def test_gives_up_when_the_invocation_runs_out_of_time(aws: dict[str, Any]) -> None:
    put_event(aws, event("post-a", 1))
    put_event(aws, event("post-a", 2))
    records = change_records(aws)
    kinesis = FlakyKinesis(aws["kinesis"], random.Random(0), fail_p=1.0)

    class Context:
        @staticmethod
        def get_remaining_time_in_millis() -> int:
            return 1_000

    handler = build(aws["env"], kinesis=kinesis, sleep=lambda _: None)
    response = handler({"Records": records}, Context())
    assert response == {"batchItemFailures": [{"itemIdentifier": first_sequence(records)}]}
    assert len(kinesis.calls) == 1
