"""`eventstack archive verify`: the event store against the archive, through the CLI, on moto."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from replay_support import BUCKET, T0, History, archive_with_duplicates, put_object
from support.aws import create_event_store
from typer.testing import CliRunner

from escore.dynamodb_store import DynamoDBEventStore
from eventstack import resources
from eventstack.cli import app
from eventstack.local.emulation import tuned_moto_dynamodb
from eventstack.verify import verify

pytestmark = pytest.mark.integration


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws(), tuned_moto_dynamodb():
        clients = {n: boto3.client(n, region_name="us-east-1") for n in ("dynamodb", "s3", "ssm")}
        clients["s3"].create_bucket(Bucket=BUCKET)
        table = create_event_store(clients["dynamodb"], "posts")
        resources.publish(resources.Resources("test", BUCKET, {"posts_events": table}, {"posts": "posts-events"}),
                          clients["ssm"])
        yield clients


def store_events(client: Any, count: int, seed: int) -> list[Any]:
    store = DynamoDBEventStore("posts_events", client)
    events = [e for e in History(seed).run(count) if e.service == "posts"]
    for item in events:
        store.append(item.stream_id, item.version - 1, [item])
    return events


def test_a_complete_archive_verifies(aws: dict[str, Any]) -> None:
    events = store_events(aws["dynamodb"], 150, seed=1)
    archive_with_duplicates(aws["s3"], events, random.Random(1), duplicate_rate=0.2)
    result = CliRunner().invoke(app, ["archive", "verify", "posts", "--stage", "test"])
    assert result.exit_code == 0, result.output
    assert "missing: 0" in result.stdout and "unexpected: 0" in result.stdout
    assert "duplicated: 0" not in result.stdout


def test_a_deleted_archive_object_is_reported_missing(aws: dict[str, Any]) -> None:
    events = store_events(aws["dynamodb"], 150, seed=2)
    keys = archive_with_duplicates(aws["s3"], events, random.Random(2), duplicate_rate=0, per_object=20)
    gone = [k for k in keys if "service=posts" in k][1]
    aws["s3"].delete_object(Bucket=BUCKET, Key=gone)
    put_object(aws["s3"], "posts", T0, "stray", History(99).run(1))  # an event the store never had

    result = CliRunner().invoke(app, ["archive", "verify", "posts", "--stage", "test"])
    assert result.exit_code == 1, result.output
    assert "missing: 20," in result.stdout and "unexpected: 1" in result.stdout
    assert "missing: post-" in result.stderr  # which events, named by stream and version

    # counted the same without the CLI; events younger than the grace period are not missing
    from eventstack.archive import ArchiveReader

    store = DynamoDBEventStore("posts_events", aws["dynamodb"])
    reader = ArchiveReader(BUCKET, aws["s3"])
    assert verify("posts", store.iter_all(), reader).missing == 20
    graced = verify("posts", store.iter_all(), reader, grace=10**10)
    assert graced.missing == 0 and graced.recent == 20


def test_an_unreadable_object_is_named_counted_and_passed_over(aws: dict[str, Any]) -> None:
    """Issue 9 defect 4: an object that is not gzip, or is truncated, is named and counted; the
    others are still read; the exit code (3) is distinct from "missing" (1)."""
    events = store_events(aws["dynamodb"], 150, seed=3)
    keys = [k for k in archive_with_duplicates(aws["s3"], events, random.Random(3), duplicate_rate=0, per_object=20)
            if "service=posts" in k]
    s3 = aws["s3"]
    s3.put_object(Bucket=BUCKET, Key=keys[1], Body=b"this is not gzip at all")
    body = s3.get_object(Bucket=BUCKET, Key=keys[2])["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=keys[2], Body=body[: len(body) // 2])

    result = CliRunner().invoke(app, ["archive", "verify", "posts", "--stage", "test"])
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    assert keys[1] in result.stderr and keys[2] in result.stderr
    assert "unreadable objects: 2" in result.stdout
    assert f"in {len(keys)} objects" in result.stdout
    from eventstack.archive import ArchiveReader

    store = DynamoDBEventStore("posts_events", aws["dynamodb"])
    counted = verify("posts", store.iter_all(), ArchiveReader(BUCKET, aws["s3"]))
    assert sorted(k for k, _ in counted.bad_objects) == sorted(keys[1:3])
    assert 20 <= counted.missing < 40  # the first: all its events; the truncated one: those after the cut-off
    help_text = " ".join(CliRunner().invoke(app, ["archive", "verify", "--help"]).stdout.split())
    assert "1 events are missing" in help_text and "3 an archive object could not be read" in help_text
