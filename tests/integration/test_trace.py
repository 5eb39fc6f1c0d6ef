"""`eventstack trace`: the archive and the live stores merged and ordered, on moto.

Requests go through the real API handlers (posts, profiles) on DynamoDB under moto, with an
X-Correlation-Id; some of their events are then archived as Firehose does (gzip JSON Lines under the
real key layout, one event delivered twice), others stay in the stores only.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from replay_support import put_object
from support.aws import create_event_store
from typer.testing import CliRunner

from escore.dynamodb_store import DynamoDBEventStore
from escore.settings import ApiSettings
from eventstack import resources
from eventstack.audit.cache import ArchiveCache
from eventstack.audit.duckdb_engine import DuckDBEngine
from eventstack.audit.trace import ArchiveUnavailable, trace
from eventstack.cli import app
from eventstack.local.emulation import tuned_moto_dynamodb
from eventstack.topology import TOPOLOGY
from posts import api as posts_api
from profiles import api as profiles_api
from tests.support.api import ApiClient, routes_of

pytestmark = pytest.mark.integration

BUCKET = "eventstack-archive-trace-test"
HOUR = datetime(2030, 1, 1, 8, tzinfo=UTC)


def archive_engine(aws: dict[str, Any]) -> DuckDBEngine:
    """The audit engine `eventstack trace --engine duckdb` opens: DuckDB over a cache synced from the bucket."""
    return DuckDBEngine(ArchiveCache(aws["cache"]), s3=aws["s3"], bucket=BUCKET)


@pytest.fixture
def aws(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with mock_aws(), tuned_moto_dynamodb():
        clients = {n: boto3.client(n, region_name="us-east-1") for n in ("dynamodb", "s3", "ssm")}
        clients["s3"].create_bucket(Bucket=BUCKET)
        tables = {s.event_store.logical_name: create_event_store(clients["dynamodb"], s.name) for s in TOPOLOGY.services}
        found = resources.Resources("test", BUCKET, tables, {s.name: s.stream_logical_name for s in TOPOLOGY.services})
        resources.publish(found, clients["ssm"])
        clients["resources"] = found
        clients["cache"] = str(tmp_path / "archive-cache")
        yield clients


def api(service: str) -> ApiClient:
    module = posts_api if service == "posts" else profiles_api
    return ApiClient(module.build(ApiSettings.environment(service, f"{service}_events")), routes_of(service))


def stored(client: Any, service: str) -> list[Any]:
    return list(DynamoDBEventStore(f"{service}_events", client).iter_all())


def one_request_across_services(aws: dict[str, Any], correlation_id: str) -> dict[str, Any]:
    """A user registers, writes a post and edits it, all under one correlation id; other requests under others."""
    headers = {"X-Correlation-Id": correlation_id}
    profiles, posts = api("profiles"), api("posts")
    user = profiles.post("/users", {"handle": f"h{uuid.uuid4().hex[:8]}", "display_name": "Ada"}, headers=headers)
    assert user.status == 201 and user.correlation_id == correlation_id, user
    user_id = user.json["user_id"]
    post = posts.post("/posts", {"author_id": user_id, "text": "first"}, headers=headers)
    assert post.status == 201, post
    post_id = post.json["post_id"]
    other = posts.post("/posts", {"author_id": user_id, "text": "another request"}, headers={"X-Correlation-Id": "other"})
    assert other.status == 201, other
    edit = posts.patch(f"/posts/{post_id}", {"text": "second", "expected_version": 1}, headers=headers)
    assert edit.status == 200, edit
    return {"user_id": user_id, "post_id": post_id}


def archive_some(aws: dict[str, Any]) -> None:
    """Archive the user's registration twice (at-least-once) and the post's creation; the edit stays in the store."""
    users = stored(aws["dynamodb"], "profiles")
    posts = sorted(stored(aws["dynamodb"], "posts"), key=lambda e: (e.occurred_at, e.version))
    created = [e for e in posts if e.type == "PostCreated"]
    put_object(aws["s3"], "profiles", HOUR, "0001", users, BUCKET)
    put_object(aws["s3"], "profiles", HOUR, "0002", users, BUCKET)  # the same batch delivered again
    put_object(aws["s3"], "posts", HOUR, "0001", created, BUCKET)


def trace_cli(aws: dict[str, Any], *args: str, stage: str = "test") -> Any:
    """The real verb, on the real DuckDB engine with its cache in the test's folder."""
    return CliRunner().invoke(app, ["trace", *args, "--stage", stage, "--cache-dir", aws["cache"]],
                              env={"COLUMNS": "250"})


def test_trace_merges_archive_and_stores_in_order(aws: dict[str, Any]) -> None:
    ids = one_request_across_services(aws, "req-trace-1")
    archive_some(aws)
    engine = archive_engine(aws)
    result = trace("req-trace-1", engine=engine, dynamodb=aws["dynamodb"], resources=aws["resources"])
    got = [(e.type, e.stream_id, e.version, e.source) for e in result.entries]
    assert got == [
        ("UserRegistered", f"user-{ids['user_id']}", 1, "both"),
        ("PostCreated", f"post-{ids['post_id']}", 1, "both"),
        ("PostEdited", f"post-{ids['post_id']}", 2, "store"),
    ]
    assert [e.occurred_at for e in result.entries] == sorted(e.occurred_at for e in result.entries)
    assert all(e.depth == 0 for e in result.entries)  # causation ids are request ids today
    assert all(e.causation_id for e in result.entries)
    assert len({e.causation_id for e in result.entries}) == 3  # one request id per command
    assert result.entries[0].archived_at is not None and result.entries[1].archived_at is not None
    assert result.entries[2].archived_at is None
    assert result.entries[2].data["text"] == "second"
    assert (result.stats["archived"], result.stats["stored"], result.stats["both"]) == (2, 3, 2)
    every_item = sum(aws["dynamodb"].scan(TableName=table, Select="COUNT")["ScannedCount"]
                     for table in aws["resources"].tables.values())
    assert result.stats["store_items_scanned"] == every_item  # a Scan reads every item, whatever it keeps
    document = result.to_json()
    assert document["correlation_id"] == "req-trace-1"
    assert [e["event_id"] for e in document["entries"]] == [e.event_id for e in result.entries]
    assert set(document["entries"][0]) == {"event_id", "causation_id", "service", "stream_id", "version", "type",
                                           "occurred_at", "archived_at", "source", "depth", "data"}

    # the stores alone (engine None), and an event only the archive still holds
    alone = trace("req-trace-1", engine=None, dynamodb=aws["dynamodb"], resources=aws["resources"])
    assert [e.source for e in alone.entries] == ["store", "store", "store"]
    gone = next(e for e in stored(aws["dynamodb"], "posts") if e.type == "PostCreated"
                and e.metadata["correlation_id"] == "req-trace-1")
    aws["dynamodb"].delete_item(TableName="posts_events", Key={"stream_id": {"S": gone.stream_id},
                                                               "version": {"N": str(gone.version)}})
    again = trace("req-trace-1", engine=engine, dynamodb=aws["dynamodb"], resources=aws["resources"])
    assert [e.source for e in again.entries] == ["both", "archive", "store"]


def test_the_cli_prints_json_and_a_table(aws: dict[str, Any]) -> None:
    ids = one_request_across_services(aws, "req-cli")
    archive_some(aws)
    result = trace_cli(aws, "req-cli", "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["correlation_id"] == "req-cli"
    assert [(e["type"], e["source"]) for e in document["entries"]] == [
        ("UserRegistered", "both"), ("PostCreated", "both"), ("PostEdited", "store")]
    assert document["entries"][2]["archived_at"] is None

    table = trace_cli(aws, "req-cli")
    assert table.exit_code == 0, table.output
    assert "not archived yet" in table.stdout
    assert f"post-{ids['post_id']}" in table.stdout and "PostEdited" in table.stdout
    assert "3 event(s): 2 archived, 1 in a store only" in table.stdout


def test_an_unknown_correlation_id_is_an_empty_trace(aws: dict[str, Any]) -> None:
    one_request_across_services(aws, "req-known")
    archive_some(aws)
    as_json = trace_cli(aws, "nobody", "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == {"correlation_id": "nobody", "entries": []}
    as_table = trace_cli(aws, "nobody")
    assert as_table.exit_code == 0, as_table.output
    assert "no event carries correlation id 'nobody'" in as_table.stderr
    # a prefix of a known id is not that id: the store's filter is on the whole JSON string
    assert json.loads(trace_cli(aws, "req-kno", "--format", "json").stdout)["entries"] == []


def test_a_store_or_archive_that_cannot_be_read_is_one_line_and_exit_1(aws: dict[str, Any]) -> None:
    tables = {**aws["resources"].tables, "posts_events": "no_such_table"}
    resources.publish(resources.Resources("nostore", BUCKET, tables, {}), aws["ssm"])
    result = trace_cli(aws, "x", stage="nostore")
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()  # the engine's progress ("synced 0 archive objects"), then the error
    assert lines[-1].startswith("error: the event store no_such_table cannot be read: "), lines
    assert [line for line in lines if "error" in line] == lines[-1:]
    assert "Traceback" not in result.output

    unarchived = resources.Resources("nobucket", "no-such-bucket", aws["resources"].tables, {})
    resources.publish(unarchived, aws["ssm"])
    result = trace_cli(aws, "x", stage="nobucket")
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        "error: the archive cannot be queried (duckdb): no archive bucket 'no-such-bucket' (is the stage deployed, "
        "or the local runtime running?)"]
    engine = DuckDBEngine(ArchiveCache(aws["cache"] + "-2"), s3=aws["s3"], bucket="no-such-bucket")
    with pytest.raises(ArchiveUnavailable):
        trace("x", engine=engine, dynamodb=aws["dynamodb"], resources=unarchived)


def test_a_correlation_id_with_quotes_and_backslashes_is_found_in_the_store_and_the_archive(aws: dict[str, Any]) -> None:
    odd = 'a "quoted" \\ id'  # printable ASCII: the API keeps it as it is
    ids = one_request_across_services(aws, odd)
    stores_only = trace(odd, engine=None, dynamodb=aws["dynamodb"], resources=aws["resources"])
    assert [e.type for e in stores_only.entries] == ["UserRegistered", "PostCreated", "PostEdited"]
    archive_some(aws)
    both = trace(odd, engine=archive_engine(aws), dynamodb=aws["dynamodb"], resources=aws["resources"])
    assert [(e.stream_id, e.source) for e in both.entries] == [
        (f"user-{ids['user_id']}", "both"), (f"post-{ids['post_id']}", "both"), (f"post-{ids['post_id']}", "store")]


def test_an_event_caused_by_an_event_follows_it_across_sources(aws: dict[str, Any]) -> None:
    """A consumer's command (none exists yet) would carry the causing event's id as causation_id: its
    event comes after the cause, one level deeper, even with an earlier clock and in another store."""
    from escore.envelope import Envelope

    ids = one_request_across_services(aws, "req-caused")
    archive_some(aws)
    cause = next(e for e in stored(aws["dynamodb"], "posts") if e.type == "PostCreated"
                 and e.metadata["correlation_id"] == "req-caused")
    effect = Envelope(str(uuid.uuid4()), f"user-{ids['user_id']}", 2, "DisplayNameChanged", 1, "profiles",
                      "2000-01-01T00:00:00.000000Z", {"display_name": "Ada, who posted"},
                      {"correlation_id": "req-caused", "causation_id": cause.event_id})
    DynamoDBEventStore("profiles_events", aws["dynamodb"]).append(effect.stream_id, 1, [effect])
    result = trace("req-caused", engine=archive_engine(aws), dynamodb=aws["dynamodb"], resources=aws["resources"])
    assert [(e.type, e.depth, e.source) for e in result.entries] == [
        ("UserRegistered", 0, "both"), ("PostCreated", 0, "both"), ("DisplayNameChanged", 1, "store"),
        ("PostEdited", 0, "store")]


def test_a_service_the_stage_does_not_list_is_not_searched_and_named(aws: dict[str, Any]) -> None:
    one_request_across_services(aws, "req-partial")
    tables = {name: table for name, table in aws["resources"].tables.items() if name != "profiles_events"}
    partial = resources.Resources("partial", BUCKET, tables, {})
    result = trace("req-partial", engine=None, dynamodb=aws["dynamodb"], resources=partial)
    assert [e.type for e in result.entries] == ["PostCreated", "PostEdited"]
    assert result.stats["stores_not_in_stage"] == ["profiles"]
    resources.publish(partial, aws["ssm"])
    done = trace_cli(aws, "req-partial", "--format", "json", stage="partial")
    assert done.exit_code == 0, done.output
    assert [e["type"] for e in json.loads(done.stdout)["entries"]] == ["PostCreated", "PostEdited"]
    assert "warning: the stage lists no event store for service profiles: not searched" in done.stderr
