"""user_notifications on moto, with its SNS topic (an SQS queue subscribed counts what is published):
at most once under duplicate deliveries and a crash between the write and the publish; an edit
notifies the newly mentioned only; a replay rebuilds the read model and publishes nothing; an event
marked replayed never publishes."""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws
from replay_support import (
    BUCKET,
    T0,
    LiveMapping,
    archive_with_duplicates,
    event,
    fold,
    kinesis_record,
    read_model,
)
from support.aws import create_projection_table

import notifications.effects
from escore import naming
from escore.envelope import Envelope, encode_record
from escore.naming import table_parameter as table_parameter_name
from escore.projection import mark_replayed
from escore.projector_lambda import build
from eventstack.local.emulation import tuned_moto_dynamodb
from eventstack.replay import Clients, Replayer, ReplayOptions, load_spec
from eventstack.resources import Resources
from notifications.notifier import Notifier, notifier_from_env
from notifications.projectors.user_notifications import PROJECTION

pytestmark = pytest.mark.integration

NAME = "user_notifications"
STAGE = "test"


class Crash(BaseException):
    """The function's process dies (a timeout, an OOM) in the middle of an invocation."""


class Aws:
    def __init__(self) -> None:
        self.dynamodb = boto3.client("dynamodb")
        self.kinesis = boto3.client("kinesis")
        self.ssm = boto3.client("ssm")
        self.s3 = boto3.client("s3")
        sns, self.sqs = boto3.client("sns"), boto3.client("sqs")
        create_projection_table(self.dynamodb, NAME)
        self.topic = sns.create_topic(Name="user_notifications-notifications")["TopicArn"]
        self.queue = self.sqs.create_queue(QueueName="notified")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=self.topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
        self.received: list[dict[str, Any]] = []
        self._sequence = itertools.count(1)

    @property
    def env(self) -> dict[str, str]:
        return {naming.ENV_PROJECTION_MODULE: "notifications.projectors.user_notifications",
                naming.table_env(NAME): NAME, naming.table_parameter_env(NAME): table_parameter_name(STAGE, NAME),
                naming.ENV_NOTIFIER: "sns", naming.ENV_NOTIFICATION_TOPIC_ARN: self.topic}

    def handler(self) -> Any:
        return build(self.env, gate_cache_seconds=0, gate_wait_seconds=0)

    def records(self, events: list[Envelope]) -> list[dict[str, Any]]:
        return [kinesis_record(next(self._sequence), encode_record(e), e.stream_id, stream=f"{e.service}-events")
                for e in events]

    def notified(self) -> list[dict[str, Any]]:
        """Every message published so far (received from the subscribed queue), in one list."""
        while True:
            got = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10,
                                           MessageAttributeNames=["All"]).get("Messages", [])
            if not got:
                return self.received
            for message in got:
                body = json.loads(message["Body"])
                body["_attribute"] = message["MessageAttributes"]["user_id"]["StringValue"]
                self.received.append(body)
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws(), tuned_moto_dynamodb():
        yield Aws()


_clock = itertools.count()


def at() -> Any:
    return T0 + timedelta(seconds=next(_clock))


def registered(user_id: str, handle: str) -> Envelope:
    return event(f"user-{user_id}", 1, "UserRegistered", {"user_id": user_id, "handle": handle, "display_name": handle},
                 at=at())


def post(post_id: str, author: str, text: str) -> Envelope:
    return event(f"post-{post_id}", 1, "PostCreated", {"post_id": post_id, "author_id": author, "text": text},
                 at=at(), schema_version=2)


def edit(created: Envelope, version: int, text: str) -> Envelope:
    data = {"text": text, "author_id": created.data["author_id"], "created_at": created.occurred_at, "previous_tags": []}
    return event(created.stream_id, version, "PostEdited", data, at=at(), schema_version=3)


def users(*handles: str) -> dict[str, str]:
    return {h: str(uuid.uuid4()) for h in handles}


def who(messages: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((m["handle"], m["post_id"]) for m in messages)


def test_duplicate_deliveries_of_a_batch_notify_each_mentioned_user_once(aws: Aws) -> None:
    ids = users("alice", "bob", "carol")
    handler = aws.handler()
    assert handler({"Records": aws.records([registered(u, h) for h, u in ids.items()])}, None) == {"batchItemFailures": []}
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    posts = [post(first, ids["carol"], "hey @alice, @Bob and @nobody_here"), post(second, ids["alice"], "me: @alice")]
    batch = aws.records(posts)
    for _ in range(3):  # Lambda delivers the same batch again (a retry, a re-delivery)
        assert handler({"Records": batch}, None) == {"batchItemFailures": []}
    # the same events again at new positions, and twice inside one batch
    assert handler({"Records": aws.records(posts + posts)}, None) == {"batchItemFailures": []}
    assert aws.handler()({"Records": batch}, None) == {"batchItemFailures": []}  # a new instance (cold start)

    messages = aws.notified()
    assert who(messages) == Counter({("alice", first): 1, ("bob", first): 1})  # not @nobody_here, not oneself
    alice = next(m for m in messages if m["handle"] == "alice")
    assert alice["user_id"] == alice["_attribute"] == ids["alice"]
    assert alice["author_id"] == ids["carol"] and alice["event_id"] == posts[0].event_id
    assert alice["mentioned_at"] == posts[0].occurred_at and alice["text"] == posts[0].data["text"]
    # the read model has every mention, the unknown handle's too
    items = read_model(aws.dynamodb, NAME)
    assert {k[0] for k in items if k[0].startswith("mentions#")} == {"mentions#alice", "mentions#bob",
                                                                     "mentions#nobody_here"}


def test_an_edit_notifies_the_newly_mentioned_only(aws: Aws) -> None:
    ids = users("alice", "bob", "dave")
    handler = aws.handler()
    handler({"Records": aws.records([registered(u, h) for h, u in ids.items()])}, None)
    created = post(str(uuid.uuid4()), ids["dave"], "hello @alice")
    handler({"Records": aws.records([created])}, None)
    edits = [edit(created, 2, "hello @alice and @bob"), edit(created, 3, "just @bob"), edit(created, 4, "@alice @bob")]
    for e in edits:
        batch = aws.records([e])
        handler({"Records": batch}, None)
        handler({"Records": batch}, None)
    post_id = created.data["post_id"]
    assert who(aws.notified()) == Counter({("alice", post_id): 1, ("bob", post_id): 1})
    assert next(m for m in aws.received if m["handle"] == "bob")["event_id"] == edits[0].event_id
    # a post and its edit in one batch: the coalesced write created the item once, one notification
    other = post(str(uuid.uuid4()), ids["dave"], "@alice")
    handler({"Records": aws.records([other, edit(other, 2, "@alice!")])}, None)
    assert who(aws.notified())[("alice", other.data["post_id"])] == 1


class CrashingNotifier:
    """The real notifier, but the process dies at the `at`-th send (before it publishes)."""

    def __init__(self, real: Notifier, at: int) -> None:
        self.real, self.at, self.sends = real, at, 0

    def send(self, notification: Any) -> None:
        self.sends += 1
        if self.sends == self.at:
            raise Crash(f"died before publishing notification {self.at}")
        self.real.send(notification)


@pytest.mark.parametrize("crash_at", [1, 2])
def test_a_crash_between_the_write_and_the_publish_never_notifies_twice(
        aws: Aws, monkeypatch: pytest.MonkeyPatch, crash_at: int) -> None:
    ids = users("alice", "bob", "carol")
    aws.handler()({"Records": aws.records([registered(u, h) for h, u in ids.items()])}, None)
    the_post = post(str(uuid.uuid4()), ids["carol"], "@alice @bob")
    batch = aws.records([the_post])

    crashing: list[CrashingNotifier] = []

    def crashing_notifier(env: Any) -> Notifier:
        crashing.append(CrashingNotifier(notifier_from_env(env), crash_at))
        return crashing[-1]

    monkeypatch.setattr(notifications.effects, "notifier_from_env", crashing_notifier)
    with pytest.raises(Crash):
        aws.handler()({"Records": batch}, None)
    monkeypatch.undo()
    # Lambda retries the batch on a fresh instance, several times: the writes are applied, nothing is sent
    for _ in range(3):
        assert aws.handler()({"Records": batch}, None) == {"batchItemFailures": []}
    sent = who(aws.notified())
    assert sent == Counter({("alice", the_post.data["post_id"]): 1} if crash_at == 2 else {})
    assert max(sent.values(), default=0) <= 1
    assert {k[0] for k in read_model(aws.dynamodb, NAME) if k[0].startswith("mentions#")} == {
        "mentions#alice", "mentions#bob"}


def test_events_marked_replayed_fold_but_never_publish(aws: Aws) -> None:
    ids = users("alice", "carol")
    handler = aws.handler()
    handler({"Records": aws.records([mark_replayed(registered(u, h)) for h, u in ids.items()])}, None)
    replayed = mark_replayed(post(str(uuid.uuid4()), ids["carol"], "@alice"))
    assert handler({"Records": aws.records([replayed])}, None) == {"batchItemFailures": []}
    assert aws.notified() == []
    assert any(k[0] == "mentions#alice" for k in read_model(aws.dynamodb, NAME))  # folded all the same
    live = post(str(uuid.uuid4()), ids["carol"], "@alice")
    handler({"Records": aws.records([live])}, None)
    assert who(aws.notified()) == Counter({("alice", live.data["post_id"]): 1})


def test_a_replay_rebuilds_the_read_model_and_publishes_nothing(aws: Aws) -> None:
    rng = random.Random(7)
    ids = users(*(f"user_{n}" for n in range(12)))
    handles = list(ids)
    events: list[Envelope] = [registered(u, h) for h, u in ids.items()]
    for _ in range(60):
        author = ids[rng.choice(handles)]
        text = " ".join(f"@{h}" for h in rng.sample(handles, rng.randint(0, 3))) + " hi"
        created = post(str(uuid.uuid4()), author, text)
        events.append(created)
        if rng.random() < 0.3:
            events.append(edit(created, 2, text + f" @{rng.choice(handles)}"))
    for service in ("posts", "profiles"):
        aws.kinesis.create_stream(StreamName=f"{service}-events", ShardCount=2)
    aws.s3.create_bucket(Bucket=BUCKET)
    for e in events:
        aws.kinesis.put_record(StreamName=f"{e.service}-events", Data=encode_record(e), PartitionKey=e.stream_id)
    # live first: the mappings deliver everything (with retries of batches)
    handler = aws.handler()
    mappings = [LiveMapping(aws.kinesis, f"{s}-events", handler, rng=rng) for s in ("profiles", "posts")]
    for mapping in mappings:
        mapping.drain()
    live = aws.notified()
    assert live and max(who(live).values()) == 1
    sent = len(live)
    expected = fold(PROJECTION, events)
    assert read_model(aws.dynamodb, NAME) == expected

    archive_with_duplicates(aws.s3, events[:-20], rng, duplicate_rate=0.2)  # Firehose is behind the stream
    resources = Resources(stage=STAGE, archive_bucket=BUCKET, tables={NAME: NAME},
                          streams={"posts": "posts-events", "profiles": "profiles-events"})
    start = T0 + timedelta(days=30)
    ticks = itertools.count()
    options = ReplayOptions(NAME, handoff_seconds=0, batch_size=60, apply_workers=1, read_workers=2, fence_seconds=0,
                            poll_seconds=0.05)
    summary = Replayer(options, resources, Clients(aws.dynamodb, aws.s3, aws.kinesis, aws.ssm), spec=load_spec(NAME),
                       clock=lambda: start + timedelta(minutes=next(ticks))).run()
    assert summary.ok, summary.problems + summary.failures
    assert summary.switched and summary.table != NAME
    assert read_model(aws.dynamodb, summary.table) == expected
    assert len(aws.notified()) == sent  # the replay published nothing

    # the live projector now writes the new table: the stream delivered again is all duplicates
    for mapping in mappings:
        mapping.checkpoints.clear()
        mapping.drain()
    assert len(aws.notified()) == sent
    # and a new post after the replay notifies, once
    author, mentioned = ids[handles[0]], handles[1]
    fresh = post(str(uuid.uuid4()), author, f"@{mentioned} after the replay")
    aws.kinesis.put_record(StreamName="posts-events", Data=encode_record(fresh), PartitionKey=fresh.stream_id)
    mappings[1].drain()
    assert who(aws.notified())[(mentioned, fresh.data["post_id"])] == 1 and len(aws.received) == sent + 1
