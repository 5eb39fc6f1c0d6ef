"""`eventstack dlq list|redrive` on moto: failure records pointing at stream ranges, sent back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from replay_support import BUCKET, History, LiveMapping, fold, read_model, scan
from support.aws import create_event_store, create_projection_table
from typer.testing import CliRunner

from escore import control
from escore.dynamodb_store import DynamoDBEventStore
from escore.envelope import decode, encode_record
from eventstack import resources
from eventstack.cli import app
from eventstack.dlq import DeadLetters, parse
from eventstack.local.emulation import tuned_moto_dynamodb
from eventstack.replay import Clients, Replayer, ReplayOptions, load_spec
from posts.projectors import hashtag_counts
from profiles.projectors import user_profiles
from tests.support.projectors import build_of

pytestmark = pytest.mark.integration
REGION_ACCOUNT = "us-east-1:123456789012"
ARN = f"arn:aws:kinesis:{REGION_ACCOUNT}:stream/posts-events"
PROJECTIONS = ("user_timeline", "user_profiles", "hashtag_counts")


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws(), tuned_moto_dynamodb():
        clients = {n: boto3.client(n, region_name="us-east-1")
                   for n in ("dynamodb", "dynamodbstreams", "kinesis", "sqs", "ssm", "s3")}
        clients["s3"].create_bucket(Bucket=BUCKET)
        create_event_store(clients["dynamodb"], "posts")
        for projection in PROJECTIONS:
            create_projection_table(clients["dynamodb"], projection)
        clients["kinesis"].create_stream(StreamName="posts-events", ShardCount=1)
        dlqs = {"posts-publisher": "posts-publisher-dlq",
                **{f"{p}-from-posts": f"{p}-from-posts-dlq" for p in PROJECTIONS}}
        for queue in dlqs.values():
            clients["sqs"].create_queue(QueueName=queue)
        resources.publish(resources.Resources("test", BUCKET, {"posts_events": "posts_events",
                                                               **{p: p for p in PROJECTIONS}},
                                              {"posts": "posts-events"}, dlqs), clients["ssm"])
        yield clients


def failure_message(kind: str, shard: str, start: str, end: str, count: int, arn: str) -> str:
    info = "KinesisBatchInfo" if kind == "kinesis" else "DDBStreamBatchInfo"
    return json.dumps({
        "requestContext": {"requestId": "r", "functionArn": "arn:aws:lambda:x", "condition": "RetryAttemptsExhausted",
                           "approximateInvokeCount": 6},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0", "timestamp": "2025-11-26T10:00:00.000Z",
        info: {"shardId": shard, "startSequenceNumber": start, "endSequenceNumber": end, "batchSize": count,
               "streamArn": arn},
    })


def queue_url(aws: dict[str, Any], name: str) -> str:
    return str(aws["sqs"].get_queue_url(QueueName=name)["QueueUrl"])


def test_a_projector_failure_is_listed_and_redriven(aws: dict[str, Any]) -> None:
    events = [e for e in History(3).run(60) if e.service == "posts"]
    sequences = []
    for item in events:
        put = aws["kinesis"].put_record(StreamName="posts-events", Data=encode_record(item), PartitionKey=item.stream_id)
        sequences.append(put["SequenceNumber"])
    shard = aws["kinesis"].list_shards(StreamName="posts-events")["Shards"][0]["ShardId"]
    arn = f"arn:aws:kinesis:{REGION_ACCOUNT}:stream/posts-events"
    url = queue_url(aws, "user_timeline-from-posts-dlq")
    aws["sqs"].send_message(QueueUrl=url, MessageBody=failure_message(
        "kinesis", shard, sequences[0], sequences[-1], len(events), arn))
    aws["sqs"].send_message(QueueUrl=url, MessageBody=failure_message(  # a range the stream no longer has
        "kinesis", shard, "900000", "900010", 11, arn))
    aws["sqs"].send_message(QueueUrl=url, MessageBody="something else")

    runner = CliRunner()
    listed = runner.invoke(app, ["dlq", "list", "--stage", "test"])
    assert listed.exit_code == 0, listed.output
    assert "user_timeline-from-posts" in listed.stdout and "3 message(s)" in listed.stdout
    assert f"RetryAttemptsExhausted, Unhandled: {len(events)} record(s) of posts-events" in listed.stdout
    assert f"[{sequences[0]}..{sequences[-1]}]" in listed.stdout and "not a stream-failure record" in listed.stdout

    dry = runner.invoke(app, ["dlq", "redrive", "user_timeline-from-posts", "--dry-run", "--stage", "test"])
    assert dry.exit_code == 0 and read_model(aws["dynamodb"], "user_timeline") == {}

    redriven = runner.invoke(app, ["dlq", "redrive", "user_timeline-from-posts", "--stage", "test"])
    assert redriven.exit_code == 1  # two messages could not be sent back, and stay
    assert "redriven: 1 message(s); kept: 2" in redriven.stdout
    assert "no longer in the stream" in redriven.stderr
    assert read_model(aws["dynamodb"], "user_timeline") == fold(load_spec("user_timeline"), events)


def test_a_publisher_failure_is_republished(aws: dict[str, Any]) -> None:
    store = DynamoDBEventStore("posts_events", aws["dynamodb"])
    events = [e for e in History(4).run(30) if e.service == "posts"]
    for item in events:
        store.append(item.stream_id, item.version - 1, [item])
    arn = aws["dynamodb"].describe_table(TableName="posts_events")["Table"]["LatestStreamArn"]
    shard = aws["dynamodbstreams"].describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = aws["dynamodbstreams"].get_shard_iterator(StreamArn=arn, ShardId=shard,
                                                         ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = aws["dynamodbstreams"].get_records(ShardIterator=iterator)["Records"]
    seqs = [r["dynamodb"]["SequenceNumber"] for r in records]
    aws["sqs"].send_message(QueueUrl=queue_url(aws, "posts-publisher-dlq"),
                            MessageBody=failure_message("dynamodb", shard, seqs[0], seqs[-1], len(seqs), arn))

    result = CliRunner().invoke(app, ["dlq", "redrive", "--stage", "test"])
    assert result.exit_code == 0, result.output
    assert "posts-publisher" in result.stdout
    kshard = aws["kinesis"].list_shards(StreamName="posts-events")["Shards"][0]["ShardId"]
    it = aws["kinesis"].get_shard_iterator(StreamName="posts-events", ShardId=kshard,
                                           ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    published = [decode(r["Data"]) for r in aws["kinesis"].get_records(ShardIterator=it)["Records"]]
    assert sorted(e.event_id for e in published) == sorted(e.event_id for e in events)
    assert aws["sqs"].get_queue_attributes(QueueUrl=queue_url(aws, "posts-publisher-dlq"),
                                           AttributeNames=["ApproximateNumberOfMessages"]
                                           )["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_resources_are_found_by_stage_or_discovered(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTSTACK_STAGE", raising=False)
    found = resources.load(None, ssm=aws["ssm"])  # the one stage published
    assert found.stage == "test" and found.source == "ssm"
    assert found.dlqs["posts-publisher"] == "posts-publisher-dlq" and found.stream("posts") == "posts-events"
    resources.publish(resources.by_convention("prod", account="123456789012", region_name="eu-west-1"), aws["ssm"])
    with pytest.raises(resources.ResourceError, match="several stages"):
        resources.load(None, ssm=aws["ssm"])
    prod = resources.load("prod", ssm=aws["ssm"])
    assert prod.table("user_timeline") == "eventstack-prod-user_timeline"
    assert prod.archive_bucket == "eventstack-prod-archive-123456789012-eu-west-1"
    assert prod.dlqs["user_timeline-from-posts"] == "eventstack-prod-user_timeline-from-posts-dlq"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    local = resources.load("local", ssm=aws["ssm"])  # nothing published for it: the local runtime's names
    assert local.source == "local-plan" and local.table("user_timeline") == "user_timeline"


# --- a projector's failed range, redriven exactly once --------------------------------------------


class FailingWrites:
    """A DynamoDB client whose every item write fails (the batch Lambda gave up on)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def _fail(self, **_: Any) -> Any:
        raise ClientError({"Error": {"Code": "ValidationException", "Message": "injected"}}, "UpdateItem")

    put_item = update_item = _fail

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def dead_letter_a_batch(aws: dict[str, Any], module: Any, table: str, events: list[Any]) -> str:
    """Deliver the stream to the live projector in batches of 20; the third fails until Lambda gives up
    on it (nothing written from its first failed record on, that range dead-lettered); the later ones
    succeed and move the shard's watermarks past it. Returns the DLQ message's body."""
    for item in events:
        aws["kinesis"].put_record(StreamName="posts-events", Data=encode_record(item), PartitionKey=item.stream_id)
    env = {f"{table.upper()}_TABLE": table}
    live = LiveMapping(aws["kinesis"], "posts-events", build_of(module)(env, client=aws["dynamodb"]), batch_size=20)
    shard = aws["kinesis"].list_shards(StreamName="posts-events")["Shards"][0]["ShardId"]
    live.step()
    live.step()
    working, live.handler = live.handler, build_of(module)(env, client=FailingWrites(aws["dynamodb"]))
    for _attempt in range(3):  # retried from its first failed record, failing each time
        live.step()
    batch = live.batch(shard, 20)  # what Lambda sends to the DLQ, and moves on from
    live.checkpoints[shard] = batch[-1]["kinesis"]["sequenceNumber"]
    live.handler = working
    live.drain()
    body = failure_message("kinesis", shard, batch[0]["kinesis"]["sequenceNumber"],
                           batch[-1]["kinesis"]["sequenceNumber"], len(batch), ARN)
    aws["sqs"].send_message(QueueUrl=queue_url(aws, f"{table}-from-posts-dlq"), MessageBody=body)
    return body


@pytest.mark.parametrize("module", [user_profiles, hashtag_counts], ids=lambda m: m.NAME)
def test_a_redriven_projector_range_is_applied_once_though_later_batches_moved_the_watermark(
        aws: dict[str, Any], module: Any) -> None:
    table = module.NAME
    events = [e for e in History(31).run(240) if e.service == "posts"]
    body = dead_letter_a_batch(aws, module, table, events)
    expected = fold(load_spec(table), events)
    assert read_model(aws["dynamodb"], table) != expected  # the dead-lettered range is missing

    runner = CliRunner()
    redriven = runner.invoke(app, ["dlq", "redrive", f"{table}-from-posts", "--stage", "test"])
    assert redriven.exit_code == 0, redriven.output
    assert "redriven: 1 message(s); kept: 0" in redriven.stdout
    assert read_model(aws["dynamodb"], table) == expected
    assert any(name.startswith("_w#redrive:posts-events:0:") for item in scan(aws["dynamodb"], table).values()
               for name in item)

    # the same message again (SQS is at least once, an operator may redrive twice): nothing changes
    before = scan(aws["dynamodb"], table)
    aws["sqs"].send_message(QueueUrl=queue_url(aws, f"{table}-from-posts-dlq"), MessageBody=body)
    again = runner.invoke(app, ["dlq", "redrive", f"{table}-from-posts", "--stage", "test"])
    assert again.exit_code == 0, again.output
    assert "redriven: 1 message(s); kept: 0" in again.stdout
    assert scan(aws["dynamodb"], table) == before


def test_a_range_a_replay_has_applied_since_is_not_applied_again(aws: dict[str, Any]) -> None:
    table = "hashtag_counts"
    events = [e for e in History(32).run(200) if e.service == "posts"]
    body = dead_letter_a_batch(aws, hashtag_counts, table, events)
    found = resources.load("test", ssm=aws["ssm"])
    dead = DeadLetters(found, lambda name: aws[name])
    failure = parse({"MessageId": "m", "ReceiptHandle": "r", "Body": body})
    held: list[str] = []

    def try_redrive(phase: str) -> None:  # while the replay holds the table, nothing is redriven
        if phase == "written":
            with pytest.raises(RuntimeError, match="a replay holds hashtag_counts") as error:
                dead.projector_event(failure, dead.read_range(failure), table)
            held.append(str(error.value))

    clients = Clients(aws["dynamodb"], aws["s3"], aws["kinesis"], aws["ssm"])
    replayer = Replayer(ReplayOptions(table, into="in-place", handoff_seconds=0, fence_seconds=0, apply_workers=1),
                        found, clients, hooks=try_redrive)
    summary = replayer.run()  # the stream holds every event: the rebuild has the dead-lettered range too
    assert summary.ok, summary.problems
    assert held and "(rebuild)" in held[0]
    expected = fold(load_spec(table), events)
    assert read_model(aws["dynamodb"], table) == expected
    assert control.read_coverage(aws["dynamodb"], table)["posts-events:0"]
    assert dead.projector_event(failure, dead.read_range(failure), table) is None  # all covered

    redriven = CliRunner().invoke(app, ["dlq", "redrive", f"{table}-from-posts", "--stage", "test"])
    assert redriven.exit_code == 0, redriven.output
    assert "redriven: 1 message(s)" in redriven.stdout
    assert read_model(aws["dynamodb"], table) == expected  # not applied a second time
