"""The local runtime's event source mappings, against moto's server, with tiny handlers.

Each test drives one mapping by calling `tick()` (no poller thread), so the order of events is the
test's: batch size and window, ReportBatchItemFailures, bisect, bounded retries, record age,
on-failure destination messages, checkpoints, resharding, DynamoDB Streams records, and faults.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from eventstack.local.emulation import MotoEmulation
from eventstack.local.faults import Faults, FaultSettings
from eventstack.local.mappings import EventSourceMapping
from eventstack.local.plan import MappingPlan
from eventstack.local.sources import Activity, DynamoDBStreamSource, KinesisSource
from eventstack.topology import MappingSettings

pytestmark = pytest.mark.integration

FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:tiny"


@pytest.fixture(scope="module")
def moto() -> Any:
    emulation = MotoEmulation(port=0)
    emulation.start()
    yield emulation
    emulation.stop()


class Recorder:
    """A tiny handler: records each batch's data; `fail` decides per batch what to answer."""

    def __init__(self, fail: Callable[[list[dict[str, Any]]], Any] | None = None):
        self.batches: list[list[dict[str, Any]]] = []
        self.fail = fail

    def __call__(self, event: dict[str, Any]) -> Any:
        records = event["Records"]
        self.batches.append(records)
        return self.fail(records) if self.fail else None

    def data(self, batch: list[dict[str, Any]]) -> list[str]:
        return [base64.b64decode(r["kinesis"]["data"]).decode() for r in batch]

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]

    def all_data(self) -> list[str]:
        return [d for b in self.batches for d in self.data(b)]


def new_stream(moto: Any, shards: int = 1) -> tuple[str, str]:
    kinesis = moto.client("kinesis")
    name = f"s-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    return name, arn


def put(moto: Any, stream: str, items: list[str], key: Callable[[int], str] = lambda i: "pk") -> list[str]:
    kinesis = moto.client("kinesis")
    return [
        kinesis.put_record(StreamName=stream, Data=item.encode(), PartitionKey=key(i))["SequenceNumber"]
        for i, item in enumerate(items)
    ]


def mapping(moto: Any, stream: str, arn: str, handler: Recorder, *, dlq: list[dict[str, Any]] | None = None,
            faults: Faults | None = None, clock: Callable[[], float] = time.time,
            **settings: Any) -> EventSourceMapping:
    base = {"batch_size": 3, "batching_window_seconds": 0, "max_retries": 2, "max_record_age_seconds": 3600}
    base.update(settings)
    plan = MappingPlan("tiny-from-test", "tiny", "kinesis", stream, MappingSettings(**base), "tiny-dlq")
    sink = dlq if dlq is not None else []
    return EventSourceMapping(
        plan, KinesisSource(moto.client("kinesis"), stream, arn), handler, FUNCTION_ARN, Activity(),
        lambda body: sink.append(json.loads(body)), faults, clock,
    )


def run(esm: EventSourceMapping, until: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not until():
        assert time.monotonic() < deadline, "the mapping did not get there in time"
        wake_at = esm.tick()
        pause = min(max(wake_at - time.monotonic(), 0.0), 0.05)
        time.sleep(pause)


def settled(esm: EventSourceMapping) -> Callable[[], bool]:
    """Caught up, as drain sees it (drain hurries: shard lists re-read, batching windows cut short)."""
    start = time.monotonic()
    esm.activity.begin_hurry()
    return lambda: esm.caught_up_since(start)


def test_batches_in_order_with_the_batch_size_and_lambdas_record_shape(moto: Any) -> None:
    stream, arn = new_stream(moto)
    items = [f"r{i}" for i in range(10)]
    sequence_numbers = put(moto, stream, items)
    handler = Recorder()
    esm = mapping(moto, stream, arn, handler)
    run(esm, settled(esm))
    assert handler.sizes == [3, 3, 3, 1]
    assert handler.all_data() == items
    first = handler.batches[0][0]
    assert first["eventSource"] == "aws:kinesis"
    assert first["eventName"] == "aws:kinesis:record"
    assert first["eventSourceARN"] == arn
    assert first["awsRegion"] == "us-east-1"
    assert first["eventID"] == f"shardId-000000000000:{sequence_numbers[0]}"
    assert first["kinesis"]["sequenceNumber"] == sequence_numbers[0]
    assert first["kinesis"]["partitionKey"] == "pk"
    assert first["kinesis"]["kinesisSchemaVersion"] == "1.0"
    assert abs(first["kinesis"]["approximateArrivalTimestamp"] - time.time()) < 60
    state = next(iter(esm.reader.shards.values()))
    assert state.checkpoint == int(sequence_numbers[-1])
    assert esm.status()["pending"] == 0


def test_batching_window_gathers_records_before_invoking(moto: Any) -> None:
    stream, arn = new_stream(moto)
    handler = Recorder()
    esm = mapping(moto, stream, arn, handler, batch_size=100, batching_window_seconds=1)
    put(moto, stream, ["a", "b"])
    esm.tick()
    assert handler.batches == []  # the window is open
    put(moto, stream, ["c"])
    time.sleep(0.1)
    esm.tick()
    assert handler.batches == []
    run(esm, lambda: bool(handler.batches), seconds=3)
    assert handler.data(handler.batches[0]) == ["a", "b", "c"]


def test_a_full_batch_does_not_wait_for_the_window(moto: Any) -> None:
    stream, arn = new_stream(moto)
    handler = Recorder()
    esm = mapping(moto, stream, arn, handler, batch_size=2, batching_window_seconds=30)
    put(moto, stream, ["a", "b", "c"])
    started = time.monotonic()
    run(esm, lambda: bool(handler.batches), seconds=3)
    assert time.monotonic() - started < 2
    assert handler.data(handler.batches[0]) == ["a", "b"]


def test_report_batch_item_failures_redelivers_from_the_lowest_failed_record(moto: Any) -> None:
    stream, arn = new_stream(moto)
    sequence_numbers = put(moto, stream, [f"r{i}" for i in range(6)])
    failed_once: set[str] = set()

    def fail(records: list[dict[str, Any]]) -> Any:
        failures = []
        for r in records:
            seq = r["kinesis"]["sequenceNumber"]
            if seq in (sequence_numbers[1], sequence_numbers[2]) and seq not in failed_once:
                failed_once.add(seq)
                failures.append({"itemIdentifier": seq})
        return {"batchItemFailures": failures[::-1]}  # order does not matter: the lowest counts

    handler = Recorder(fail)
    esm = mapping(moto, stream, arn, handler)
    esm.reader.refresh()
    state = next(iter(esm.reader.shards.values()))
    esm.reader.read(state, time.monotonic())
    esm.deliver(state)
    assert handler.data(handler.batches[0]) == ["r0", "r1", "r2"]
    assert state.checkpoint == int(sequence_numbers[0])  # only what precedes the lowest failure
    run(esm, settled(esm))
    assert [handler.data(b) for b in handler.batches] == [["r0", "r1", "r2"], ["r1", "r2", "r3"], ["r4", "r5"]]
    assert esm.dlq_sent == 0


def test_an_unknown_item_identifier_fails_the_whole_batch(moto: Any) -> None:
    stream, arn = new_stream(moto)
    put(moto, stream, ["a", "b"])
    answers = iter([{"batchItemFailures": [{"itemIdentifier": "no-such-record"}]}])
    handler = Recorder(lambda records: next(answers, None))
    esm = mapping(moto, stream, arn, handler, bisect_on_error=False)
    run(esm, settled(esm))
    assert [handler.data(b) for b in handler.batches] == [["a", "b"], ["a", "b"]]


def test_bisect_isolates_a_poison_record_and_sends_only_it_to_the_dlq(moto: Any) -> None:
    stream, arn = new_stream(moto)
    items = [f"r{i}" for i in range(8)]
    items[5] = "poison"
    sequence_numbers = put(moto, stream, items)
    handler = Recorder()

    def fail(records: list[dict[str, Any]]) -> Any:
        if "poison" in handler.data(records):
            raise ValueError("cannot handle poison")
        return None

    handler.fail = fail
    dlq: list[dict[str, Any]] = []
    esm = mapping(moto, stream, arn, handler, dlq=dlq, batch_size=8, max_retries=1)
    run(esm, settled(esm))
    succeeded = [handler.data(b) for b in handler.batches if "poison" not in handler.data(b)]
    assert sorted(d for b in succeeded for d in b) == sorted(i for i in items if i != "poison")
    assert [d for b in succeeded for d in b] == [i for i in items if i != "poison"]  # still in order
    poison_invocations = [b for b in handler.batches if handler.data(b) == ["poison"]]
    assert len(poison_invocations) == 2  # the first try and one retry
    assert len(dlq) == 1
    message = dlq[0]
    info = message["KinesisBatchInfo"]
    assert info["shardId"] == "shardId-000000000000"
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == sequence_numbers[5]
    assert info["batchSize"] == 1
    assert info["streamArn"] == arn
    assert info["approximateArrivalOfFirstRecord"].endswith("Z")
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["functionArn"] == FUNCTION_ARN
    assert message["requestContext"]["approximateInvokeCount"] == 2
    assert message["responseContext"]["functionError"] == "Unhandled"
    assert message["version"] == "1.0"


def test_retries_are_bounded_and_the_checkpoint_moves_only_after_the_batch(moto: Any) -> None:
    stream, arn = new_stream(moto)
    sequence_numbers = put(moto, stream, ["bad", "good"])
    handler = Recorder()

    def fail(records: list[dict[str, Any]]) -> Any:
        if "bad" in handler.data(records):
            raise RuntimeError("boom")

    handler.fail = fail
    dlq: list[dict[str, Any]] = []
    esm = mapping(moto, stream, arn, handler, dlq=dlq, batch_size=1, max_retries=2, bisect_on_error=False)
    esm.reader.refresh()
    state = next(iter(esm.reader.shards.values()))
    esm.reader.read(state, time.monotonic())
    for attempt in range(3):
        state.not_before = 0
        esm.deliver(state)
        if attempt < 2:
            assert state.checkpoint is None  # not moved by a failed batch
            assert dlq == []
    assert len(dlq) == 1 and dlq[0]["requestContext"]["approximateInvokeCount"] == 3
    assert state.checkpoint == int(sequence_numbers[0])  # moved past the discarded batch
    run(esm, settled(esm))
    assert [handler.data(b) for b in handler.batches] == [["bad"]] * 3 + [["good"]]


def test_records_older_than_the_maximum_age_go_to_the_dlq_without_an_invocation(moto: Any) -> None:
    stream, arn = new_stream(moto)
    put(moto, stream, ["old1", "old2"])
    handler = Recorder()
    dlq: list[dict[str, Any]] = []
    esm = mapping(moto, stream, arn, handler, dlq=dlq, max_record_age_seconds=60,
                  clock=lambda: time.time() + 120)
    run(esm, settled(esm))
    assert handler.batches == []
    assert len(dlq) == 1
    assert dlq[0]["requestContext"]["condition"] == "RecordAgeExceeded"
    assert dlq[0]["KinesisBatchInfo"]["batchSize"] == 2


def test_partial_failures_exhausting_retries_send_the_rest_of_the_batch_and_move_on(moto: Any) -> None:
    stream, arn = new_stream(moto)
    sequence_numbers = put(moto, stream, ["ok", "poison", "after1", "after2"])

    def fail(records: list[dict[str, Any]]) -> Any:
        return {"batchItemFailures": [{"itemIdentifier": r["kinesis"]["sequenceNumber"]}
                                      for r in records if r["kinesis"]["sequenceNumber"] == sequence_numbers[1]]}

    handler = Recorder(fail)
    dlq: list[dict[str, Any]] = []
    esm = mapping(moto, stream, arn, handler, dlq=dlq, batch_size=10, max_retries=1)
    run(esm, settled(esm))
    assert len(dlq) == 1
    info = dlq[0]["KinesisBatchInfo"]
    assert info["startSequenceNumber"] == sequence_numbers[1]
    assert "functionError" not in dlq[0]["responseContext"]
    # the records behind the poison were delivered (and reported done) every time: never held back
    assert handler.all_data().count("after2") == 2
    put(moto, stream, ["later"])
    run(esm, settled(esm))
    assert handler.data(handler.batches[-1]) == ["later"]


def test_a_closed_parent_is_drained_before_its_child_is_read(moto: Any) -> None:
    stream, arn = new_stream(moto, shards=2)
    kinesis = moto.client("kinesis")
    put(moto, stream, [f"before{i}" for i in range(6)], key=lambda i: f"k{i}")
    handler = Recorder()
    esm = mapping(moto, stream, arn, handler, batch_size=2)
    esm.reader.refresh()
    assert len(esm.reader.shards) == 2
    shards = sorted(esm.reader.shards)
    kinesis.merge_shards(StreamName=stream, ShardToMerge=shards[0], AdjacentShardToMerge=shards[1])
    put(moto, stream, [f"after{i}" for i in range(4)], key=lambda i: f"k{i}")
    esm.reader.next_refresh = 0
    run(esm, lambda: "after3" in handler.all_data())
    run(esm, settled(esm))
    shard_of = [b[0]["eventID"].split(":")[0] for b in handler.batches]
    child = next(s for s in esm.reader.shards if s not in shards)
    first_child = shard_of.index(child)
    assert set(shard_of[:first_child]) <= set(shards)
    assert child not in shard_of[:first_child] and set(shard_of[first_child:]) == {child}
    assert all(esm.reader.shards[s].finished for s in shards)
    delivered = handler.all_data()
    assert {f"after{i}" for i in range(4)} <= set(delivered)
    # moto copies a merged parent's records into the child, so those come again (AWS does not do this)
    assert {f"before{i}" for i in range(6)} <= set(delivered)
    for shard in (*shards, child):  # in order within each shard
        numbers = [int(r["kinesis"]["sequenceNumber"]) for b in handler.batches for r in b
                   if r["eventID"].startswith(shard + ":")]
        assert numbers == sorted(numbers)


def test_dynamodb_stream_records_are_shaped_as_lambda_sends_them(moto: Any) -> None:
    dynamodb = moto.client("dynamodb")
    table = f"t-{uuid.uuid4().hex[:8]}"
    description = dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "stream_id", "KeyType": "HASH"}, {"AttributeName": "version", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "stream_id", "AttributeType": "S"},
                              {"AttributeName": "version", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )["TableDescription"]
    stream_arn = description["LatestStreamArn"]
    for version in (1, 2):
        dynamodb.put_item(TableName=table, Item={"stream_id": {"S": "post-1"}, "version": {"N": str(version)},
                                                 "blob": {"B": b"\x00\xff"}})
    seen: list[dict[str, Any]] = []
    plan = MappingPlan("pub", "pub", "dynamodb", table, MappingSettings(batch_size=10, batching_window_seconds=0),
                       "pub-dlq")
    dlq: list[dict[str, Any]] = []
    calls = itertools.count()

    def handler(event: dict[str, Any]) -> Any:
        seen.extend(event["Records"])
        if next(calls) == 0:
            return {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["dynamodb"]["SequenceNumber"]}]}
        return {"batchItemFailures": []}

    esm = EventSourceMapping(plan, DynamoDBStreamSource(moto.client("dynamodbstreams"), table, stream_arn), handler,
                             FUNCTION_ARN, Activity(), lambda body: dlq.append(json.loads(body)))
    run(esm, settled(esm))
    assert len(seen) == 3  # the second record again, after the reported failure
    record = seen[0]
    assert record["eventName"] == "INSERT"
    assert record["eventSource"] == "aws:dynamodb"
    assert record["eventSourceARN"] == stream_arn
    ddb = record["dynamodb"]
    assert ddb["Keys"] == {"stream_id": {"S": "post-1"}, "version": {"N": "1"}}
    assert ddb["NewImage"]["blob"] == {"B": base64.b64encode(b"\x00\xff").decode()}
    assert isinstance(ddb["ApproximateCreationDateTime"], int)
    assert ddb["StreamViewType"] == "NEW_IMAGE"
    assert int(seen[2]["dynamodb"]["SequenceNumber"]) == int(seen[1]["dynamodb"]["SequenceNumber"])


def test_injected_crashes_do_a_prefix_then_retry_without_using_the_retry_budget(moto: Any) -> None:
    stream, arn = new_stream(moto)
    items = [f"r{i}" for i in range(20)]
    put(moto, stream, items)
    handler = Recorder()
    dlq: list[dict[str, Any]] = []
    faults = Faults(FaultSettings(crash=0.5, seed=7))
    esm = mapping(moto, stream, arn, handler, dlq=dlq, faults=faults, batch_size=5, max_retries=0)
    run(esm, settled(esm))
    assert dlq == []
    assert faults.crashed > 0
    assert set(handler.all_data()) == set(items)
    assert sum(handler.sizes) > len(items)  # prefixes done before the crashes came again


def test_duplicate_delivery_delivers_every_batch_again(moto: Any) -> None:
    stream, arn = new_stream(moto)
    put(moto, stream, ["a", "b", "c"])
    handler = Recorder()
    esm = mapping(moto, stream, arn, handler, faults=Faults(FaultSettings(duplicates=1.0)))
    run(esm, settled(esm))
    assert [handler.data(b) for b in handler.batches] == [["a", "b", "c"], ["a", "b", "c"]]


def test_the_dlq_message_for_a_dynamodb_stream_names_its_batch_info(moto: Any) -> None:
    dynamodb = moto.client("dynamodb")
    table = f"t-{uuid.uuid4().hex[:8]}"
    stream_arn = dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )["TableDescription"]["LatestStreamArn"]
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "x"}})
    sqs = moto.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    plan = MappingPlan("pub", "pub", "dynamodb", table,
                       MappingSettings(batch_size=10, batching_window_seconds=0, max_retries=0), "q")

    def handler(event: dict[str, Any]) -> Any:
        raise RuntimeError("always")

    esm = EventSourceMapping(plan, DynamoDBStreamSource(moto.client("dynamodbstreams"), table, stream_arn), handler,
                             FUNCTION_ARN, Activity(),
                             lambda body: sqs.send_message(QueueUrl=queue_url, MessageBody=body))
    run(esm, settled(esm))
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    body = json.loads(messages[0]["Body"])
    assert set(body) >= {"requestContext", "responseContext", "version", "timestamp", "DDBStreamBatchInfo"}
    info = body["DDBStreamBatchInfo"]
    assert info["streamArn"] == stream_arn and info["batchSize"] == 1
    assert set(info) == {"shardId", "startSequenceNumber", "endSequenceNumber", "approximateArrivalOfFirstRecord",
                         "approximateArrivalOfLastRecord", "batchSize", "streamArn"}
