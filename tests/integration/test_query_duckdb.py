"""The DuckDB engine against moto's S3: the ETag cache (only new or changed objects downloaded, deleted
ones dropped), the relations' columns, undecodable lines skipped and counted, unreadable objects left
out and named, an empty archive, dialects and parameters, and the command line's output and exit codes."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from eventstack import resources
from eventstack.audit.cache import ArchiveCache
from eventstack.audit.duckdb_engine import DuckDBEngine
from eventstack.audit.engine import EngineError
from eventstack.cli import app
from eventstack.sql import QueryError

pytestmark = pytest.mark.integration

BUCKET = "eventstack-test-archive"
HOUR10 = "events/service=posts/year=2026/month=12/day=01/hour=10/"
HOUR11 = "events/service=profiles/year=2026/month=12/day=01/hour=11/"


def envelope(n: int, stream: str = "post-1", kind: str = "PostCreated", service: str = "posts") -> bytes:
    return json.dumps({
        "event_id": f"e{n}", "stream_id": stream, "version": n, "type": kind, "schema_version": 1, "service": service,
        "occurred_at": f"2026-12-01T10:00:0{n % 10}.000000Z", "data": {"n": n},
        "metadata": {"correlation_id": f"c{n % 2}", "causation_id": None},
    }).encode()


def put(s3: Any, key: str, *lines: bytes) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(b"".join(line + b"\n" for line in lines)))


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def engine(s3: Any, root: Path) -> DuckDBEngine:
    return DuckDBEngine(ArchiveCache(root), s3=s3, bucket=BUCKET)


def count(runner: DuckDBEngine, sql: str, **kwargs: Any) -> Any:
    return runner.query(sql, **kwargs).rows[0][0]


def test_relations_and_the_first_copy(s3: Any, tmp_path: Path) -> None:
    put(s3, HOUR10 + "a.gz", envelope(1), envelope(2))
    put(s3, HOUR11 + "b.gz", envelope(2), envelope(3, "user-1", "UserRegistered", "profiles"))
    runner = engine(s3, tmp_path)
    assert count(runner, "SELECT count(*) FROM events_raw") == 4
    assert count(runner, "SELECT count(DISTINCT event_id) FROM events") == 3
    rows = runner.query("SELECT * FROM events WHERE event_id = 'e2'").records()
    assert len(rows) == 1
    row = rows[0]
    assert row["archive_key"] == HOUR10 + "a.gz"  # both copies were written together: the key decides
    assert (row["version"], row["schema_version"], row["year"], row["month"], row["day"], row["hour"]) == (
        2, 1, "2026", "12", "01", "10")
    assert row["archived_at"].endswith("Z") and row["archived_at"].startswith("20")
    assert json.loads(row["data"]) == {"n": 2} and json.loads(row["metadata"])["correlation_id"] == "c0"
    assert runner.query("SELECT service FROM events WHERE event_id = 'e3'").rows == [("profiles",)]


def test_etag_cache_downloads_only_new_or_changed_and_drops_deleted(s3: Any, tmp_path: Path) -> None:
    put(s3, HOUR10 + "a.gz", envelope(1))
    put(s3, HOUR10 + "b.gz", envelope(2))
    first = engine(s3, tmp_path)
    assert count(first, "SELECT count(*) FROM events") == 2
    assert first.sync_stats is not None and first.sync_stats.downloaded == 2

    put(s3, HOUR10 + "c.gz", envelope(3))  # new
    put(s3, HOUR10 + "a.gz", envelope(1), envelope(4))  # changed: a new ETag
    s3.delete_object(Bucket=BUCKET, Key=HOUR10 + "b.gz")  # deleted
    second = engine(s3, tmp_path)
    assert sorted(r[0] for r in second.query("SELECT event_id FROM events").rows) == ["e1", "e3", "e4"]
    stats = second.sync_stats
    assert stats is not None
    assert (stats.listed, stats.downloaded, stats.deleted) == (2, 2, 1)
    assert sorted(stats.downloaded_keys) == [HOUR10 + "a.gz", HOUR10 + "c.gz"]
    assert not (tmp_path / "objects" / HOUR10 / "b.gz").exists()
    assert not (tmp_path / "columnar" / HOUR10 / "b.gz.parquet").exists()  # its Parquet copy goes too
    assert (tmp_path / "columnar" / HOUR10 / "c.gz.parquet").is_file()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [o["key"] for o in manifest["objects"]] == [HOUR10 + "a.gz", HOUR10 + "c.gz"]
    assert {"key", "etag", "size", "last_modified"} <= set(manifest["objects"][0])

    third = engine(s3, tmp_path)
    third.query("SELECT 1")
    assert third.sync_stats is not None and third.sync_stats.downloaded == 0


def test_undecodable_lines_are_skipped_and_counted(s3: Any, tmp_path: Path) -> None:
    put(s3, HOUR10 + "a.gz", envelope(1), b"not json {", b"[1, 2]", b'{"event_id": "e9", "version": "x"}', envelope(2))
    s3.put_object(Bucket=BUCKET, Key=HOUR10 + "broken.gz", Body=gzip.compress(envelope(5) + b"\n")[:-8])
    said: list[str] = []
    runner = engine(s3, tmp_path)
    assert count(runner, "SELECT count(*) FROM events_raw", progress=said.append) == 2
    assert any("3 archived line(s) in 1 object(s) are not envelopes: skipped" in line for line in said), said
    assert any(HOUR10 + "broken.gz" in line and "cannot be read" in line for line in said), said
    entries = {o.key: o for o in runner.cache.objects()}
    assert (entries[HOUR10 + "a.gz"].lines, entries[HOUR10 + "a.gz"].bad_lines) == (5, 3)
    assert entries[HOUR10 + "broken.gz"].unreadable


def test_an_empty_archive_gives_empty_relations(s3: Any, tmp_path: Path) -> None:
    runner = engine(s3, tmp_path)
    assert count(runner, "SELECT count(*) FROM events") == 0
    assert runner.query("SELECT * FROM events_raw").rows == []


def test_dialects_and_parameters(s3: Any, tmp_path: Path) -> None:
    put(s3, HOUR10 + "a.gz", envelope(1), envelope(2), envelope(3))
    runner = engine(s3, tmp_path)
    athena = "SELECT json_extract_scalar(metadata, '$.correlation_id') AS c, count(*) AS n FROM events GROUP BY 1 ORDER BY 1"
    assert runner.query(athena, dialect="athena").rows == [("c0", 1), ("c1", 2)]
    found = runner.query("SELECT event_id FROM events WHERE stream_id = $stream AND version >= $v ORDER BY version",
                         {"stream": "post-1", "v": 2})
    assert found.rows == [("e2",), ("e3",)]


@pytest.mark.parametrize(("sql", "says"), [
    ("SELEC 1", "Parser Error"),
    ("SELECT nope FROM events", "Binder Error"),
    ("SELECT * FROM nowhere", "Catalog Error"),
])
def test_bad_sql_is_a_query_error(s3: Any, tmp_path: Path, sql: str, says: str) -> None:
    runner = engine(s3, tmp_path)
    with pytest.raises(QueryError, match=says) as raised:
        runner.query(sql)
    assert "\n" not in str(raised.value)


def test_no_bucket_is_an_engine_error(s3: Any, tmp_path: Path) -> None:
    runner = DuckDBEngine(ArchiveCache(tmp_path), s3=s3, bucket="no-such-bucket")
    with pytest.raises(EngineError, match="no archive bucket 'no-such-bucket'"):
        runner.query("SELECT 1")


def published(s3: Any, bucket: str = BUCKET) -> None:
    """Resources in moto's SSM, where `resources.load` finds a deployed stage's."""
    resources.publish(resources.Resources("test", bucket, {}, {}), boto3.client("ssm", region_name="us-east-1"))


def test_command_line_formats_and_exit_codes(s3: Any, tmp_path: Path) -> None:
    put(s3, HOUR10 + "a.gz", envelope(1), envelope(1), envelope(2), b"garbage")
    published(s3)
    cli = CliRunner()
    base = ["query", "--stage", "test", "--cache-dir", str(tmp_path)]
    done = cli.invoke(app, [*base, "SELECT type, count(*) AS n FROM events_raw GROUP BY type", "--format", "json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == [{"type": "PostCreated", "n": 3}]
    assert "not envelopes: skipped" in done.stderr and "synced 1 archive objects" in done.stderr

    done = cli.invoke(app, [*base, "SELECT event_id, version FROM events ORDER BY 1", "--format", "csv"])
    assert done.exit_code == 0 and done.stdout.splitlines() == ["event_id,version", "e1,1", "e2,2"]

    done = cli.invoke(app, [*base, "SELECT event_id FROM events ORDER BY 1"])
    assert done.exit_code == 0 and "e1" in done.stdout and "event_id" in done.stdout

    done = cli.invoke(app, [*base, "SELECT nope FROM events"])
    assert done.exit_code == 2 and done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]  # after the progress lines
    assert errors == [done.stderr.splitlines()[-1]] and errors[0].startswith("error: Binder Error")
    assert "Traceback" not in done.output

    done = cli.invoke(app, [*base, "SELECT FROM WHERE (", "--dialect", "athena"])
    assert done.exit_code == 2 and "cannot read the query as athena SQL" in done.stderr


def test_command_line_without_the_bucket_exits_1(s3: Any, tmp_path: Path) -> None:
    published(s3, "gone-bucket")
    done = CliRunner().invoke(app, ["query", "--stage", "test", "--cache-dir", str(tmp_path), "SELECT 1"])
    assert done.exit_code == 1
    assert done.stderr.strip() == "error: no archive bucket 'gone-bucket' (is the stage deployed, or the local runtime running?)"
