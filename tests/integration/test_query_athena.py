"""The Athena engine: on moto's Athena (the SQL, workgroup and database sent; results typed, header row
skipped) and through botocore's Stubber (results read over more than one page, FAILED and CANCELLED
as one-line query errors, progress lines while polling)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import sqlglot
from botocore.stub import Stubber
from moto import mock_aws
from moto.athena.models import QueryResults, athena_backends
from moto.core import DEFAULT_ACCOUNT_ID

from escore.naming import audit_database, audit_workgroup
from eventstack.audit.athena_engine import AthenaEngine
from eventstack.audit.engine import EngineError
from eventstack.sql import QueryError

pytestmark = pytest.mark.integration

BUCKET = "eventstack-test-archive-123456789012-us-east-1"
COLUMNS = [{"Name": "type", "Label": "type", "Type": "varchar"}, {"Name": "n", "Label": "n", "Type": "bigint"},
           {"Name": "last", "Label": "last", "Type": "timestamp(3) with time zone"}]


def cell(*values: str | None) -> dict[str, Any]:
    return {"Data": [{"VarCharValue": v} if v is not None else {} for v in values]}


HEADER = cell("type", "n", "last")


@pytest.fixture
def athena() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("athena", region_name="us-east-1")
        client.create_work_group(Name=audit_workgroup("test"), Configuration={
            "ResultConfiguration": {"OutputLocation": "s3://eventstack-test-audit/results/"}})
        yield client


def test_on_moto_the_query_goes_with_its_relations_workgroup_and_database(athena: Any) -> None:
    backend = athena_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    backend.query_results_queue.append(QueryResults(rows=[
        HEADER, cell("PostCreated", "2", "2026-12-01 10:00:00.000 UTC"), cell("PostEdited", None, None)],
        column_info=COLUMNS))
    said: list[str] = []
    engine = AthenaEngine(athena, stage="test", bucket=BUCKET, poll=0.01)
    result = engine.query("WITH mine AS (SELECT type FROM events) SELECT type, count(*) AS n, max(archived_at) AS last "
                          "FROM mine GROUP BY type", progress=said.append)
    assert result.columns == ["type", "n", "last"]
    assert result.rows == [("PostCreated", 2, "2026-12-01T10:00:00Z"), ("PostEdited", None, None)]
    execution = backend.executions[result.stats["execution_id"]]
    assert execution.workgroup.name == audit_workgroup("test")
    assert execution.context == {"Database": audit_database("test")}
    tree = sqlglot.parse_one(execution.query, read="athena")
    assert [cte.alias for cte in tree.args["with_"].expressions] == ["events_raw", "events", "mine"]
    assert f'FROM "{audit_database("test")}"."events_raw"' in execution.query
    assert any("SUCCEEDED" in line for line in said), said


def test_on_moto_a_missing_workgroup_is_an_engine_error(athena: Any) -> None:
    with pytest.raises(EngineError, match="is the stage's audit stack deployed"):
        AthenaEngine(athena, stage="other", bucket=BUCKET, poll=0.01).query("SELECT count(*) FROM events")


def execution(state: str, reason: str | None = None, scanned: int = 0) -> dict[str, Any]:
    status: dict[str, Any] = {"State": state}
    if reason:
        status["StateChangeReason"] = reason
    return {"QueryExecution": {"QueryExecutionId": "q1", "Status": status,
                               "Statistics": {"DataScannedInBytes": scanned, "TotalExecutionTimeInMillis": 1500}}}


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("athena", region_name="us-east-1")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def expect_start(stub: Stubber, engine: AthenaEngine, sql: str, dialect: str | None = None) -> None:
    stub.add_response("start_query_execution", {"QueryExecutionId": "q1"}, {
        "QueryString": engine.statement(sql, dialect=dialect), "WorkGroup": audit_workgroup("test"),
        "QueryExecutionContext": {"Database": audit_database("test")}})


def test_results_are_read_over_every_page(stubbed: tuple[Any, Stubber]) -> None:
    client, stub = stubbed
    engine = AthenaEngine(client, stage="test", bucket=BUCKET, poll=0.001)
    sql = "SELECT type, count(*) AS n, max(archived_at) AS last FROM events GROUP BY type"
    expect_start(stub, engine, sql, "duckdb")
    for state in ("QUEUED", "RUNNING"):
        stub.add_response("get_query_execution", execution(state, scanned=2_000_000))
    stub.add_response("get_query_execution", execution("SUCCEEDED", scanned=5_000_000))
    metadata = {"ColumnInfo": COLUMNS}
    stub.add_response("get_query_results", {"ResultSet": {"Rows": [HEADER, cell("A", "1", None)],
                                                          "ResultSetMetadata": metadata}, "NextToken": "t1"},
                      {"QueryExecutionId": "q1", "MaxResults": 1000})
    stub.add_response("get_query_results", {"ResultSet": {"Rows": [cell("B", "2", None)], "ResultSetMetadata": metadata},
                                            "NextToken": "t2"},
                      {"QueryExecutionId": "q1", "MaxResults": 1000, "NextToken": "t1"})
    stub.add_response("get_query_results", {"ResultSet": {"Rows": [cell("type", "3", None)],  # a value, not a header
                                                          "ResultSetMetadata": metadata}},
                      {"QueryExecutionId": "q1", "MaxResults": 1000, "NextToken": "t2"})
    said: list[str] = []
    result = engine.query(sql, dialect="duckdb", progress=said.append)
    assert result.rows == [("A", 1, None), ("B", 2, None), ("type", 3, None)]
    assert result.stats["bytes_scanned"] == 5_000_000 and result.stats["seconds"] == 1.5
    assert [line.split(": ")[1].split(" ")[0] for line in said] == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert "5.0 MB scanned" in said[-1]


@pytest.mark.parametrize("state", ["FAILED", "CANCELLED"])
def test_failed_or_cancelled_is_a_query_error_with_athenas_reason(stubbed: tuple[Any, Stubber], state: str) -> None:
    client, stub = stubbed
    engine = AthenaEngine(client, stage="test", bucket=BUCKET, poll=0.001)
    expect_start(stub, engine, "SELECT nope FROM events")
    stub.add_response("get_query_execution", execution(
        state, "COLUMN_NOT_FOUND: line 1:8: Column 'nope'\ncannot be resolved"))
    with pytest.raises(QueryError) as raised:
        engine.query("SELECT nope FROM events")
    assert str(raised.value) == f"Athena query {state}: COLUMN_NOT_FOUND: line 1:8: Column 'nope' cannot be resolved"


def test_parameters_are_rendered_before_the_ctes() -> None:
    engine = AthenaEngine(None, stage="test", bucket=BUCKET)
    sent = engine.statement("SELECT * FROM events WHERE stream_id = $s", {"s": "post-'1"})
    assert "stream_id = 'post-''1'" in sent and '"$path"' in sent


def test_command_line_on_athena(athena: Any) -> None:
    from typer.testing import CliRunner

    from eventstack import resources
    from eventstack.cli import app

    resources.publish(resources.Resources("test", BUCKET, {}, {}), boto3.client("ssm", region_name="us-east-1"))
    athena_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].query_results_queue.append(QueryResults(
        rows=[HEADER, cell("PostCreated", "7", "2026-12-01 10:00:00.000 UTC")], column_info=COLUMNS))
    cli = CliRunner()
    done = cli.invoke(app, ["query", "--engine", "athena", "--stage", "test", "--format", "json",
                            "SELECT type, count(*) AS n, max(archived_at) AS last FROM events GROUP BY type"])
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == '[{"type":"PostCreated","n":7,"last":"2026-12-01T10:00:00Z"}]'
    assert "SUCCEEDED" in done.stderr

    resources.publish(resources.Resources("other", BUCKET, {}, {}), boto3.client("ssm", region_name="us-east-1"))
    done = cli.invoke(app, ["query", "--engine", "athena", "--stage", "other", "SELECT 1"])
    assert done.exit_code == 1 and "Traceback" not in done.output
    assert done.stderr.strip().startswith("error: Athena workgroup eventstack-other-audit: WorkGroup does not exist")
