"""`eventstack history --at`: a post created, edited twice and deleted through the real API on moto,
part of its stream archived (one event twice), the rest in the store only; its text at each moment."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import test_trace
from replay_support import put_object
from test_trace import BUCKET, HOUR, api, archive_engine
from typer.testing import CliRunner

from escore.dynamodb_store import DynamoDBEventStore
from escore.envelope import utc_now
from eventstack.audit.history import history
from eventstack.cli import app

pytestmark = pytest.mark.integration

aws = test_trace.aws  # the fixture: moto, both event stores, the archive bucket, the stage's resources


def instant() -> str:
    """Now, strictly between the events before and after it (occurred_at has microseconds)."""
    time.sleep(0.002)
    now = utc_now()
    time.sleep(0.002)
    return now


def post_lifetime(aws: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """Create, edit, edit, delete one post; the instants between; archive versions 1-2 (v1 twice)."""
    posts = api("posts")
    moments = {"before": instant()}
    created = posts.post("/posts", {"author_id": "0b6f2f0e-3333-4000-8000-00000000000c", "text": "one"})
    assert created.status == 201, created
    post_id = created.json["post_id"]
    moments["created"] = instant()
    assert posts.patch(f"/posts/{post_id}", {"text": "two", "expected_version": 1}).status == 200
    moments["edited"] = instant()
    assert posts.patch(f"/posts/{post_id}", {"text": "three", "expected_version": 2}).status == 200
    moments["edited_again"] = instant()
    assert posts.delete(f"/posts/{post_id}", query={"expected_version": "3"}).status == 200
    moments["deleted"] = instant()
    events = DynamoDBEventStore("posts_events", aws["dynamodb"]).read(f"post-{post_id}")
    assert [e.version for e in events] == [1, 2, 3, 4]
    put_object(aws["s3"], "posts", HOUR, "0001", events[:2], BUCKET)
    put_object(aws["s3"], "posts", HOUR, "0002", events[:1], BUCKET)  # v1 delivered again
    return post_id, moments


TEXTS = {"created": ("one", False, 1), "edited": ("two", False, 2), "edited_again": ("three", False, 3),
         "deleted": ("three", True, 4)}


def test_the_post_at_each_moment(aws: dict[str, Any]) -> None:
    post_id, moments = post_lifetime(aws)
    engine = archive_engine(aws)
    stream = f"post-{post_id}"
    for moment, (text, deleted, version) in TEXTS.items():
        told = history(stream, at=moments[moment], engine=engine, dynamodb=aws["dynamodb"], resources=aws["resources"])
        assert told.state is not None, moment
        assert (told.state["text"], told.state["deleted"], told.state["version"]) == (text, deleted, version), moment
        assert [e.version for e in told.events] == list(range(1, version + 1))
        assert [e.source for e in told.events] == ["both", "both", "store", "store"][:version]
        assert (told.events[0].archived_at is not None, told.events[-1].archived_at is None) == (True, version > 2)
        assert told.later == 4 - version
    before = history(stream, at=moments["before"], engine=engine, dynamodb=aws["dynamodb"], resources=aws["resources"])
    assert (before.state, before.events, before.later) == (None, [], 4)
    now = history(stream, engine=engine, dynamodb=aws["dynamodb"], resources=aws["resources"])
    assert now.state is not None and now.state["deleted"] is True and now.at is None


def run(aws: dict[str, Any], *args: str) -> Any:
    """The real verb, on the real DuckDB engine with its cache in the test's folder."""
    return CliRunner().invoke(app, ["history", *args, "--stage", "test", "--cache-dir", aws["cache"]],
                              env={"COLUMNS": "250"})


def test_the_cli_json_and_table(aws: dict[str, Any]) -> None:
    post_id, moments = post_lifetime(aws)
    stream = f"post-{post_id}"
    for moment, (text, deleted, version) in TEXTS.items():
        result = run(aws, stream, "--at", moments[moment], "--format", "json")
        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)
        assert set(document) == {"stream_id", "at", "events", "state"}
        assert (document["stream_id"], document["at"]) == (stream, moments[moment])
        assert [e["version"] for e in document["events"]] == list(range(1, version + 1))
        assert document["state"]["text"] == text and document["state"]["deleted"] is deleted
        assert document["state"]["id"] == post_id and document["state"]["version"] == version
    before = run(aws, stream, "--at", moments["before"], "--format", "json")
    assert before.exit_code == 0, before.output
    assert json.loads(before.stdout) == {"stream_id": stream, "at": moments["before"], "events": [], "state": None}

    table = run(aws, stream, "--at", moments["edited"])
    assert table.exit_code == 0, table.output
    assert "PostCreated" in table.stdout and "PostEdited" in table.stdout and "PostDeleted" not in table.stdout
    assert "2 later event(s) not folded" in table.stdout
    state = json.loads(table.stdout[table.stdout.index("{\n"):])  # the state's JSON ends the output
    assert state["text"] == "two"
    not_yet = run(aws, stream, "--at", moments["before"])
    assert not_yet.exit_code == 0 and f"state as of {moments['before']}: did not exist yet" in not_yet.stdout
    whole = run(aws, stream)
    assert whole.exit_code == 0 and "not archived yet" in whole.stdout and "state now:" in whole.stdout


def test_bad_input_is_one_line_and_exit_2(aws: dict[str, Any]) -> None:
    for args, message in [
        (("order-1",), "error: unknown stream 'order-1': no service's aggregate has it (known: post-<id> (posts), "
                       "user-<id> (profiles))"),
        (("post-x", "--at", "last tuesday"), "error: --at: 'last tuesday' is not a time: use RFC 3339, "
                                             "e.g. 2026-11-26T14:00:00Z or 2026-11-26"),
    ]:
        result = run(aws, *args)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == message
        assert result.stdout == ""
    empty = run(aws, "user-0b6f2f0e-2222-4000-8000-00000000000b", "--format", "json")
    assert empty.exit_code == 0, empty.output
    assert json.loads(empty.stdout)["events"] == [] and "has no events" in empty.stderr
