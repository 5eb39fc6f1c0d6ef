"""`eventstack replay --engine local`: the DuckDB plan and the pool over its files, on moto.

The plan's bucket rule is one rule in SQL and Python; the plan's SQL transpiles to Trino; worker
processes (a moto server, each process its own clients) rebuild exactly; a failed file is retried
alone; the plan's own problems (two events at one version, an unreadable object) block the switch.
The other replay tests (test_replay.py) run on this engine too, in process."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import boto3
import duckdb
import pytest
import sqlglot
from moto import mock_aws
from replay_support import BUCKET, T0, History, archive_with_duplicates, fold, put_object, read_model, scan
from support.aws import create_projection_table
from test_replay import Crash, CrashingDynamoDB, Stack

from escore.replay_file import done_key, stream_bucket
from eventstack import sql
from eventstack.archive_scan import in_shard
from eventstack.local.emulation import tuned_moto_dynamodb
from eventstack.replay import Clients, Replayer, ReplayError, ReplayOptions
from eventstack.resources import Resources

pytestmark = pytest.mark.integration


@pytest.fixture
def stack() -> Iterator[Stack]:
    with mock_aws(), tuned_moto_dynamodb():
        yield Stack("local")


def test_the_bucket_rule_is_one_rule_in_sql_and_python() -> None:
    rng = random.Random(3)
    ids = [f"post-{uuid.UUID(int=rng.getrandbits(128))}" for _ in range(400)] + ["user-é", "ü-∑-😀", "a", "x" * 300]
    connection = duckdb.connect()
    connection.execute("CREATE TABLE plan_lines (line VARCHAR, origin INTEGER, archive_key VARCHAR)")
    rows = [(f'{{"event_id":"e{i}","stream_id":{sql.literal(s).replace(chr(39), chr(34))},"version":1}}', 0, "k")
            for i, s in enumerate(ids)]
    connection.executemany("INSERT INTO plan_lines VALUES (?, ?, ?)", rows)
    for count in (1, 2, 3, 7, 64):
        query = sql.render(sql.source("replay_plan"), {"buckets": count})
        got = {line.split('"stream_id":"')[1].split('"')[0]: bucket
               for bucket, line in connection.execute(query).fetchall()}
        assert got == {s: stream_bucket(s, count) for s in ids}
        assert all(in_shard(s, (stream_bucket(s, count), count)) for s in ids)
    assert len({stream_bucket(s, 7) for s in ids}) == 7  # spread over every bucket


def test_the_plan_transpiles_to_trino() -> None:
    text = sql.transpile(sql.render(sql.source("replay_plan"), {"buckets": 16}), write="athena")
    assert "MD5(TO_UTF8(stream_id))" in text and "FROM_BASE(" in text and "UBIGINT" not in text
    assert "JSON_EXTRACT_SCALAR" in text and "ROW_NUMBER() OVER (PARTITION BY event_id" in text
    sqlglot.parse_one(text, read="trino")  # and it reads back as Trino
    check = sql.transpile(sql.render(sql.source("replay_plan_check"), {"limit": 5}), write="athena")
    sqlglot.parse_one(check, read="trino")


def test_several_files_in_process_and_a_failed_file_retried_alone(stack: Stack) -> None:
    rng = random.Random(21)
    events = History(seed=21).run(300)
    archive_with_duplicates(stack.clients.s3, events[:260], rng, duplicate_rate=0.1, per_object=25)
    stack.publish(events[200:])
    name = "user_profiles"
    expected = fold(stack.specs[name], events)
    clean = stack.replayer(name, files=3).run()
    assert clean.ok and clean.switched and read_model(stack.clients.dynamodb, clean.table) == expected
    assert clean.archive.partitions == 3 and clean.applied + clean.skipped == len(events)
    assert {k for k in scan(stack.clients.dynamodb, clean.table) if k[0].startswith("$")} == {("$control", "$coverage")}
    assert not stack.clients.s3.list_objects_v2(Bucket=BUCKET, Prefix="replay-plans/").get("Contents")  # removed

    crashing = CrashingDynamoDB(stack.clients.dynamodb, round(clean.written * 0.8))  # in the last file(s)
    first = stack.replayer(name, files=3, clients=Clients(crashing, stack.clients.s3, stack.clients.kinesis,
                                                          stack.clients.ssm))
    with pytest.raises(Crash):
        first.run()
    table = first.summary.table
    done = [k for k in range(3) if scan(stack.clients.dynamodb, table).get(done_key(k, 3))]
    assert done and len(done) < 3  # some files finished before the crash, not all
    second = stack.replayer(name, files=3, resume=True)
    notes: list[str] = []
    second.progress.note = notes.append  # type: ignore[method-assign]
    summary = second.run()
    assert summary.ok and summary.switched and read_model(stack.clients.dynamodb, table) == expected
    assert f"{len(done)} of 3 file(s) already done" in notes  # the finished files are not run again
    assert summary.already < first.summary.written  # only the failed file's writes are found done


def test_two_events_at_one_version_block_the_switch(stack: Stack) -> None:
    events = History(seed=22).run(120)
    archive_with_duplicates(stack.clients.s3, events, random.Random(22), duplicate_rate=0)
    twin = next(e for e in events if e.type == "PostEdited")
    put_object(stack.clients.s3, "posts", T0, "twin", [twin.with_changes(event_id=str(uuid.uuid4()))])
    summary = stack.replayer("user_timeline").run()
    assert not summary.ok and not summary.switched and stack.pointer("user_timeline") is None
    assert any("two events" in p and twin.stream_id in p for p in summary.problems), summary.problems


def test_an_unreadable_object_is_named_and_blocks_the_switch(stack: Stack) -> None:
    events = History(seed=23).run(120)
    archive_with_duplicates(stack.clients.s3, events, random.Random(23), duplicate_rate=0)
    key = put_object(stack.clients.s3, "posts", T0, "broken", events[:5])
    body = stack.clients.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    stack.clients.s3.put_object(Bucket=BUCKET, Key=key, Body=body[: len(body) // 2])  # truncated
    summary = stack.replayer("user_timeline").run()
    assert not summary.ok and not summary.switched
    assert any("unreadable object" in p and "broken" in p for p in summary.problems), summary.problems
    # fixed, the replay plans again and goes through
    stack.clients.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    again = stack.replayer("user_timeline", resume=True).run()
    assert again.ok and again.switched
    assert read_model(stack.clients.dynamodb, again.table) == fold(stack.specs["user_timeline"], events)


def test_the_engine_options_are_checked(stack: Stack) -> None:
    from typer.testing import CliRunner

    from eventstack.cli import app

    with pytest.raises(ReplayError, match="--shard"):
        stack.replayer("user_timeline", engine="local", shard=(0, 2))
    for args, says in ((["--engine", "gpu"], "--engine takes local or aws"),
                       (["--engine", "local", "--shard", "0/2"], "--shard runs the scan engine")):
        result = CliRunner().invoke(app, ["replay", "user_timeline", *args])
        assert result.exit_code == 2 and says in " ".join(result.output.split()), result.output


# --- worker processes against a moto server -------------------------------------------------------


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The local runtime's AWS emulation (moto's server, each request under one lock, as the real
    services make them atomic; a bare moto server can lose one of two concurrent ADDs to an item)."""
    import urllib.request

    from eventstack.local.emulation import MotoEmulation

    emulation = MotoEmulation("127.0.0.1", 0)
    emulation.start()
    endpoint = emulation.endpoint_url
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # the pool's processes make their clients from it
    try:
        yield endpoint
    finally:
        emulation.stop()


@pytest.mark.parametrize("name", ["user_profiles", "hashtag_counts"])
def test_worker_processes_rebuild_exactly(server: str, name: str) -> None:
    clients = Clients(*(boto3.client(n, region_name="us-east-1", endpoint_url=server)
                        for n in ("dynamodb", "s3", "kinesis", "ssm")))
    clients.s3.create_bucket(Bucket=BUCKET)
    create_projection_table(clients.dynamodb, name)
    for service in ("posts", "profiles"):
        clients.kinesis.create_stream(StreamName=f"{service}-events", ShardCount=2)
    resources = Resources(stage="test", archive_bucket=BUCKET, tables={name: name},
                          streams={"posts": "posts-events", "profiles": "profiles-events"})
    events = History(seed=25).run(400)
    archive_with_duplicates(clients.s3, events[:340], random.Random(25), duplicate_rate=0.1)
    from escore.envelope import encode_record

    for event in events[300:]:
        clients.kinesis.put_record(StreamName=f"{event.service}-events", Data=encode_record(event),
                                   PartitionKey=event.stream_id)
    options = ReplayOptions(name, workers=2, files=4, handoff_seconds=0, apply_workers=2, poll_seconds=0.05)
    summary = Replayer(options, resources, clients).run()
    assert summary.ok and summary.switched, summary.problems + summary.failures
    assert summary.archive.partitions == 4 and summary.written > 0
    assert read_model(clients.dynamodb, summary.table) == fold(Replayer(options, resources, clients).spec, events)
