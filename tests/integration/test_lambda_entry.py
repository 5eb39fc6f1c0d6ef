"""The functions' Lambda entry points (`handler = lazy(build)`), invoked as Lambda invokes them:
built from os.environ on the first call, with Powertools' logging context, tracing and metrics
around every invocation; the metrics are flushed as CloudWatch EMF on stdout."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from escore.envelope import Envelope, encode, encode_record, new_id, utc_now
from escore.runtime import lazy
from eventstack.apigw import parse_proxy_result, rest_event
from eventstack.topology import TOPOLOGY
from tests.support.aws import create_table
from tests.support.lambda_context import LambdaContext
from tests.support.projectors import build_of

pytestmark = pytest.mark.integration


@pytest.fixture
def aws() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("dynamodb", region_name="us-east-1")


def emf(output: str) -> dict[str, float]:
    """The metric values of every EMF line printed."""
    values: dict[str, float] = {}
    for line in output.splitlines():
        if '"_aws"' not in line:
            continue
        record = json.loads(line)
        for definition in record["_aws"]["CloudWatchMetrics"]:
            for metric in definition["Metrics"]:
                value = record[metric["Name"]]
                values[metric["Name"]] = values.get(metric["Name"], 0) + (sum(value) if isinstance(value, list) else value)
    return values


def post_created() -> Envelope:
    post_id = new_id()
    return Envelope(new_id(), f"post-{post_id}", 1, "PostCreated", 2, "posts", utc_now(),
                    {"post_id": post_id, "author_id": new_id(), "text": "hi #x", "tags": ["x"]},
                    {"correlation_id": new_id()})


def test_the_api_entry_builds_from_the_environment_and_flushes_metrics(
    aws: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    table = create_table(aws, TOPOLOGY.service("posts").event_store, "posts_events")
    monkeypatch.setenv("SERVICE_NAME", "posts")
    monkeypatch.setenv("EVENT_STORE_TABLE", table)
    from posts import api

    entry = lazy(api.build)  # what `posts.api.handler` is, fresh for this test
    event = rest_event("POST", "/posts", body={"author_id": new_id(), "text": "hello"},
                       routes=TOPOLOGY.service("posts").routes)
    status, _, body = parse_proxy_result(entry(event, LambdaContext()))
    assert status == 201, body
    metrics = emf(capsys.readouterr().out)
    assert metrics.get("Responses2xx") == 1  # (ColdStart too, in the process's first invocation only)
    status, _, _ = parse_proxy_result(entry(rest_event("GET", f"/posts/{new_id()}"), LambdaContext()))
    assert status == 404
    assert emf(capsys.readouterr().out).get("Responses4xx") == 1


def test_the_publisher_entry_counts_what_it_published(
    aws: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kinesis = boto3.client("kinesis", region_name="us-east-1")
    kinesis.create_stream(StreamName="posts-events", ShardCount=1)
    monkeypatch.setenv("EVENT_STREAM_NAME", "posts-events")
    # (the publisher writes each batch's attempt mark to its event store)
    monkeypatch.setenv("EVENT_STORE_TABLE", create_table(aws, TOPOLOGY.service("posts").event_store, "posts_events"))
    from publisher import handler as publisher

    events = [post_created(), post_created()]
    records = [
        {"eventName": "INSERT", "dynamodb": {
            "SequenceNumber": str(100 + i),
            "Keys": {"stream_id": {"S": e.stream_id}, "version": {"N": "1"}},
            "NewImage": {"stream_id": {"S": e.stream_id}, "version": {"N": "1"}, "kind": {"S": "event"},
                         "envelope": {"S": encode(e).decode()}},
        }}
        for i, e in enumerate(events)
    ]
    assert lazy(publisher.build)({"Records": records}, LambdaContext()) == {"batchItemFailures": []}
    metrics = emf(capsys.readouterr().out)
    assert metrics.get("EventsPublished") == 2
    assert "RecordsUnpublished" not in metrics  # zero counts are not sent


def test_the_projector_entry_counts_applied_and_duplicate_events(
    aws: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, projection = TOPOLOGY.projection("user_timeline")
    monkeypatch.setenv("USER_TIMELINE_TABLE", create_table(aws, projection.table, "user_timeline"))
    from profiles.projectors import user_timeline

    event = post_created()
    record = {"kinesis": {"sequenceNumber": "1", "partitionKey": event.stream_id,
                          "data": base64.b64encode(encode_record(event)).decode()}}
    entry = lazy(build_of(user_timeline))
    batch = {"Records": [record, {**record, "kinesis": {**record["kinesis"], "sequenceNumber": "2"}}]}
    assert entry(batch, LambdaContext()) == {"batchItemFailures": []}
    metrics = emf(capsys.readouterr().out)
    assert metrics.get("EventsApplied") == 1
    assert metrics.get("DuplicatesSkipped") == 1
