"""eventstack.replay_aws.run_map against moto's S3 and DynamoDB, with Athena and Step Functions stubbed
(botocore Stubber: moto runs neither an UNLOAD nor a Distributed Map). The stubs assert every call and
its order: the UNLOAD in the audit workgroup, the execution of the replay machine with the manifest and
the concurrency, the polling; moto holds what is written (the manifest) and read (the done markers)."""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from escore import naming
from escore.replay_file import done_key, stream_bucket
from eventstack import replay_aws
from eventstack.replay import ReplayError
from eventstack.replay_summary import ReplaySummary
from eventstack.topology import TOPOLOGY

pytestmark = pytest.mark.integration

REGION, ACCOUNT, STAGE = "us-east-1", "123456789012", "dev"
ARCHIVE = "eventstack-dev-archive-123456789012-us-east-1"
TABLE = "eventstack-dev-user_timeline-g20261201T120000"
MACHINE = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:eventstack-dev-replay"
EXECUTION = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:eventstack-dev-replay:x"
MAP_RUN = f"arn:aws:states:{REGION}:{ACCOUNT}:mapRun:eventstack-dev-replay/FoldEveryFile:1"


@dataclass
class Recorder:
    notes: list[str] = field(default_factory=list)
    phases: list[tuple[str, int | None]] = field(default_factory=list)
    advanced: int = 0

    def phase(self, name: str, total: int | None) -> None:
        self.phases.append((name, total))

    def advance(self, amount: int) -> None:
        self.advanced += amount

    def note(self, message: str) -> None:
        self.notes.append(message)


@dataclass
class FakeReplayer:
    """What run_map reads of a Replayer: the projection, the topology, the resources, the progress."""

    projection: Any
    progress: Recorder
    topology: Any = TOPOLOGY
    resources: Any = None
    summary: ReplaySummary = field(default_factory=lambda: ReplaySummary("user_timeline"))


@pytest.fixture
def aws() -> Any:
    os.environ.setdefault("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        s3.create_bucket(Bucket=ARCHIVE)
        results = naming.audit_results_bucket(STAGE, ACCOUNT, REGION)
        s3.create_bucket(Bucket=results)
        dynamodb.create_table(
            TableName=TABLE, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
        )
        yield s3, dynamodb, results


def _record() -> dict[str, Any]:
    last = "events/service=profiles/year=2026/month=12/day=01/hour=11/profiles-archive-2.gz"
    return {
        "projection": "user_timeline", "into": "new", "table": TABLE, "since": None, "until": None,
        "started_at": "2026-12-01T12:00:00+00:00",
        "max_keys": {"profiles": last, "posts": "events/service=posts/year=2026/month=12/day=01/hour=11/p-1.gz"},
    }


def _archive(s3: Any) -> None:
    for key in (
        "events/service=profiles/year=2026/month=12/day=01/hour=10/profiles-archive-1.gz",
        "events/service=profiles/year=2026/month=12/day=01/hour=11/profiles-archive-2.gz",
        "events/service=profiles/year=2026/month=12/day=01/hour=12/profiles-archive-3.gz",  # after the listing
        "events/service=posts/year=2026/month=12/day=01/hour=11/p-1.gz",
    ):
        s3.put_object(Bucket=ARCHIVE, Key=key, Body=b"x" * 1000)


def _unload_output(s3: Any, results: str, prefix: str) -> list[str]:
    """What the UNLOAD writes (moto runs no Athena): bucket 0 in two files, nothing else."""
    keys = [f"{prefix}q0/bucket=0/20261201_a.gz", f"{prefix}q0/bucket=0/20261201_b.gz"]
    for key in keys:
        s3.put_object(Bucket=results, Key=key, Body=gzip.compress(b'{"event_id":"e"}\n'))
    return keys


def _result(status: str = "done", problems: list[str] | None = None) -> dict[str, Any]:
    """A worker's answer (escore.replay_file.FileResult.as_dict) for bucket 0 of 1."""
    return {"index": 0, "count": 1, "status": status, "lines": 12, "events": 10, "folded": 9, "skipped": 1,
            "duplicates": 2, "failed": 0, "written": 7, "already": 0, "problems": problems or [], "failures": [],
            "seconds": 1.5}


def _run(aws: Any, athena: Any, sfn: Any, *, markers: bool = True, workers: int = 8, expect: bool = True,
         result: dict[str, Any] | None = None, kinesis: Any = None) -> tuple[FakeReplayer, dict[str, Any]]:
    s3, dynamodb, results = aws
    _, projection = TOPOLOGY.projection("user_timeline")
    replayer = FakeReplayer(projection, Recorder())
    target = replay_aws.Target(STAGE, ACCOUNT, REGION, ARCHIVE)
    record = _record()
    plan_prefix = naming.replay_plan_prefix("user_timeline", "20261201T120000")
    _unload_output(s3, results, plan_prefix)
    # what the Map's ResultWriter writes (moto runs no Step Functions): one succeeded child
    child = {"Status": "SUCCEEDED", "Input": "{}", "Output": json.dumps(result or _result())}
    s3.put_object(Bucket=results, Key=f"{plan_prefix}results/map-run-1/SUCCEEDED_0.json", Body=json.dumps([child]).encode())
    s3.put_object(Bucket=results, Key=f"{plan_prefix}results/map-run-1/manifest.json", Body=b"{}")
    if markers:
        pk, sk = done_key(0, 1)
        dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": pk}, "sk": {"S": sk}, "state": {"S": "{}"}})
    clients = replay_aws.AwsClients(athena, s3, sfn, dynamodb, kinesis)
    assert replay_aws.run_map(replayer, record, {}, workers=workers, clients=clients, target=target,
                              poll_seconds=0) is expect
    return replayer, {"prefix": plan_prefix}


def _athena_stubs(athena: Any) -> Stubber:
    stub = Stubber(athena)
    stub.add_response(
        "start_query_execution", {"QueryExecutionId": "q-1"},
        {"QueryString": ANY, "WorkGroup": naming.audit_workgroup(STAGE),
         "QueryExecutionContext": {"Database": naming.audit_database(STAGE)}},
    )
    stub.add_response("get_query_execution", {"QueryExecution": {"Status": {"State": "RUNNING"}}}, {"QueryExecutionId": "q-1"})
    stub.add_response(
        "get_query_execution",
        {"QueryExecution": {"Status": {"State": "SUCCEEDED"}, "Statistics": {"DataScannedInBytes": 4000}}},
        {"QueryExecutionId": "q-1"},
    )
    return stub


def _map_counts(stub: Stubber, **counts: int) -> None:
    stub.add_response("list_map_runs", {"mapRuns": [{"executionArn": EXECUTION, "mapRunArn": MAP_RUN,
                                                      "stateMachineArn": MACHINE, "startDate": "2026-12-01"}]},
                      {"executionArn": EXECUTION})
    full = {"pending": 0, "running": 0, "succeeded": 0, "failed": 0, "timedOut": 0, "aborted": 0, "total": 1,
            "resultsWritten": 0, **counts}
    stub.add_response("describe_map_run", {
        "mapRunArn": MAP_RUN, "executionArn": EXECUTION, "status": "SUCCEEDED", "startDate": "2026-12-01",
        "maxConcurrency": 1, "toleratedFailurePercentage": 100, "toleratedFailureCount": 0,
        "itemCounts": full, "executionCounts": full}, {"mapRunArn": MAP_RUN})


def _sfn_stubs(sfn: Any, *, final: dict[str, int], status: str = "SUCCEEDED", concurrency: int = 1) -> Stubber:
    stub = Stubber(sfn)
    stub.add_response("start_execution", {"executionArn": EXECUTION, "startDate": "2026-12-01"},
                      {"stateMachineArn": MACHINE, "name": ANY, "input": ANY})
    described = {"executionArn": EXECUTION, "stateMachineArn": MACHINE, "startDate": "2026-12-01"}
    stub.add_response("describe_execution", {**described, "status": "RUNNING"}, {"executionArn": EXECUTION})
    _map_counts(stub, running=1)
    stub.add_response("describe_execution", {**described, "status": status, "error": "States.Timeout", "cause": "too long"},
                      {"executionArn": EXECUTION})
    _map_counts(stub, **final)
    if status == "SUCCEEDED":
        _map_counts(stub, **final)
    return stub


def test_plans_with_athena_writes_the_manifest_and_runs_the_map(aws: Any) -> None:
    s3, _, results = aws
    _archive(s3)
    athena, sfn = boto3.client("athena", region_name=REGION), boto3.client("stepfunctions", region_name=REGION)
    with _athena_stubs(athena) as a, _sfn_stubs(sfn, final={"succeeded": 1}) as f:
        replayer, plan = _run(aws, athena, sfn)
        a.assert_no_pending_responses()
        f.assert_no_pending_responses()
    progress, summary = replayer.progress, replayer.summary
    manifest = json.loads(s3.get_object(Bucket=results, Key=plan["prefix"] + "manifest.json")["Body"].read())
    _, projection = TOPOLOGY.projection("user_timeline")
    assert manifest == [{
        "projection": "user_timeline", "folds": projection.folds, "stage": STAGE, "table": TABLE,
        "bucket": results, "keys": [f"{plan['prefix']}q0/bucket=0/20261201_a.gz", f"{plan['prefix']}q0/bucket=0/20261201_b.gz"],
        "index": 0, "count": 1, "cuts": {}, "require_start": True, "origins": None,
    }]
    from escore.replay_file import PlanItem

    PlanItem.model_validate(manifest[0])  # the worker's own model accepts it
    assert ("fold (Step Functions)", 1) in progress.phases and progress.advanced == 1
    assert "0.00 GB archived in the window: 1 bucket(s)" in progress.notes  # posts' one object (1000 B)
    # the children's results, added up as the local engine does
    assert (summary.events_read, summary.applied, summary.skipped, summary.duplicates, summary.written) == (12, 9, 1, 2, 7)
    assert summary.ok


def test_a_bucket_with_problems_answers_false_with_the_problems_in_the_summary(aws: Any) -> None:
    s3, _, _ = aws
    _archive(s3)
    athena, sfn = boto3.client("athena", region_name=REGION), boto3.client("stepfunctions", region_name=REGION)
    with _athena_stubs(athena), _sfn_stubs(sfn, final={"succeeded": 1}):
        replayer, _ = _run(aws, athena, sfn, markers=False, expect=False,
                           result=_result("problems", ["post-1 v3: two events (e1, e2)"]))
    assert replayer.summary.problems == ["bucket 0/1: post-1 v3: two events (e1, e2)"]
    assert not replayer.summary.ok


def test_the_unload_and_the_execution_input(aws: Any) -> None:
    s3, _, results = aws
    _archive(s3)
    athena, sfn = boto3.client("athena", region_name=REGION), boto3.client("stepfunctions", region_name=REGION)
    queries: list[str] = []
    inputs: list[dict[str, Any]] = []
    athena.meta.events.register("provide-client-params.athena.StartQueryExecution",
                                lambda params, **_: queries.append(params["QueryString"]))
    sfn.meta.events.register("provide-client-params.sfn.StartExecution",
                             lambda params, **_: inputs.append(json.loads(params["input"])))
    with _athena_stubs(athena), _sfn_stubs(sfn, final={"succeeded": 1}):
        _, plan = _run(aws, athena, sfn, workers=50)
    (query,) = queries
    assert query.startswith("UNLOAD (") and "partitioned_by = ARRAY['bucket']" in query
    assert f"TO 's3://{results}/{plan['prefix']}q0/'" in query
    assert "format = 'TEXTFILE'" in query and "compression = 'GZIP'" in query
    assert f'"{naming.audit_database(STAGE)}"."{naming.AUDIT_LINES_TABLE}"' in query
    assert "year BETWEEN '2026' AND '2026'" in query
    assert f"(service = 'posts' AND \"$path\" <= 's3://{ARCHIVE}/events/service=posts/year=2026/month=12/day=01/hour=11/p-1.gz')" in query
    assert "service = 'profiles'" not in query  # user_timeline reads the posts stream only
    select = query.split("UNLOAD (", 1)[1]
    assert select.index("SELECT line, CAST(") < select.index("AS bucket FROM ranked")  # bucket last
    assert "BETWEEN 0 AND 0 ORDER BY bucket, stream_id, version" in select
    (given,) = inputs
    assert given["max_concurrency"] == 1  # workers capped by the bucket count
    assert given["plan"]["manifest_key"] == plan["prefix"] + "manifest.json"
    assert given["plan"]["results_prefix"] == plan["prefix"] + "results"


def test_failed_items_are_named_with_their_bucket_and_error(aws: Any) -> None:
    s3, _, _ = aws
    _archive(s3)
    athena, sfn = boto3.client("athena", region_name=REGION), boto3.client("stepfunctions", region_name=REGION)
    with _athena_stubs(athena), _sfn_stubs(sfn, final={"failed": 1}) as f:
        f.add_response("list_map_runs", {"mapRuns": [{"executionArn": EXECUTION, "mapRunArn": MAP_RUN,
                                                       "stateMachineArn": MACHINE, "startDate": "2026-12-01"}]})
        child = f"{EXECUTION}:child-0"
        f.add_response("list_executions", {"executions": [{"executionArn": child, "stateMachineArn": MACHINE,
                                                            "name": "c", "status": "FAILED", "startDate": "2026-12-01"}]},
                       {"mapRunArn": MAP_RUN, "statusFilter": "FAILED"})
        f.add_response("describe_execution", {"executionArn": child, "stateMachineArn": MACHINE, "status": "FAILED",
                                              "startDate": "2026-12-01", "error": "ThrottlingException",
                                              "cause": "rate exceeded", "input": json.dumps({"index": 0, "keys": ["a", "b"]})},
                       {"executionArn": child})
        f.add_response("list_executions", {"executions": []}, {"mapRunArn": MAP_RUN, "statusFilter": "TIMED_OUT"})
        f.add_response("list_executions", {"executions": []}, {"mapRunArn": MAP_RUN, "statusFilter": "ABORTED"})
        with pytest.raises(ReplayError, match=r"1 of 1 bucket\(s\) failed.*bucket 0 \(2 file\(s\)\) failed: ThrottlingException: rate exceeded"):
            _run(aws, athena, sfn)


def test_a_failed_execution_is_an_error_with_its_cause(aws: Any) -> None:
    s3, _, _ = aws
    _archive(s3)
    athena, sfn = boto3.client("athena", region_name=REGION), boto3.client("stepfunctions", region_name=REGION)
    with (_athena_stubs(athena), _sfn_stubs(sfn, final={"failed": 0}, status="TIMED_OUT"),
          pytest.raises(ReplayError, match=r"ended TIMED_OUT: States\.Timeout: too long")):
        _run(aws, athena, sfn)


def test_a_bucket_without_its_done_marker_is_reported(aws: Any) -> None:
    s3, _, _ = aws
    _archive(s3)
    athena, sfn = boto3.client("athena", region_name=REGION), boto3.client("stepfunctions", region_name=REGION)
    with (_athena_stubs(athena), _sfn_stubs(sfn, final={"succeeded": 1}),
          pytest.raises(ReplayError, match=r"1 of 1 bucket\(s\) have no done marker.*: 0\.")):
        _run(aws, athena, sfn, markers=False)


def test_a_failed_query_stops_before_any_execution(aws: Any) -> None:
    s3, _, _ = aws
    _archive(s3)
    athena, sfn = boto3.client("athena", region_name=REGION), boto3.client("stepfunctions", region_name=REGION)
    stub = Stubber(athena)
    stub.add_response("start_query_execution", {"QueryExecutionId": "q-1"})
    stub.add_response("get_query_execution", {"QueryExecution": {"Status": {
        "State": "FAILED", "StateChangeReason": "Query exhausted the bytes scanned cutoff"}}})
    with stub, Stubber(sfn) as untouched:  # no response queued: any Step Functions call would fail
        with pytest.raises(ReplayError, match="q-1 failed: Query exhausted the bytes scanned cutoff"):
            _run(aws, athena, sfn)
        untouched.assert_no_pending_responses()


def test_stream_records_up_to_the_cuts_become_one_sorted_file_per_bucket(aws: Any) -> None:
    s3, _, results = aws
    kinesis = boto3.client("kinesis", region_name=REGION)
    kinesis.create_stream(StreamName="s", ShardCount=1)
    shard = kinesis.list_shards(StreamName="s")["Shards"][0]["ShardId"]
    sequences = []
    for stream_id, version in (("b", 2), ("a", 1), ("b", 1)):
        line = json.dumps({"event_id": f"{stream_id}{version}", "stream_id": stream_id, "version": version}) + "\n"
        sequences.append(kinesis.put_record(StreamName="s", Data=line.encode(), PartitionKey=stream_id)["SequenceNumber"])
    kinesis.put_record(StreamName="s", Data=b'{"event_id":"late","stream_id":"a","version":2}\n', PartitionKey="a")
    progress = Recorder()
    _, projection = TOPOLOGY.projection("user_timeline")
    machine = replay_aws.AwsReplay(FakeReplayer(projection, progress),
                                   replay_aws.AwsClients(None, s3, None, None, kinesis),
                                   replay_aws.Target(STAGE, ACCOUNT, REGION, ARCHIVE))
    plan = replay_aws.Plan("replay-plans/user_timeline/r/", 1)
    assert machine.stream_files(plan, {"s": {shard: sequences[-1]}}) == 3  # the record after the cut left out
    body = s3.get_object(Bucket=results, Key="replay-plans/user_timeline/r/bucket=0/stream-records.gz")["Body"].read()
    lines = [json.loads(x) for x in gzip.decompress(body).splitlines()]
    assert [(x["stream_id"], x["version"]) for x in lines] == [("a", 1), ("b", 1), ("b", 2)]
    assert stream_bucket("a", 1) == 0


def test_bucket_count_fits_a_file_in_the_workers_fifteen_minutes() -> None:
    assert replay_aws.bucket_count(0) == 1
    per_file_bytes = replay_aws.EVENTS_PER_FILE * replay_aws.BYTES_PER_LINE
    assert replay_aws.bucket_count(int(per_file_bytes)) == 1
    assert replay_aws.bucket_count(int(per_file_bytes) + 1000) == 2
    # one billion events of the benchmark's size
    assert replay_aws.bucket_count(int(1e9 * replay_aws.BYTES_PER_LINE)) == 500


def test_workers_must_be_positive() -> None:
    with pytest.raises(ReplayError, match="at least one"):
        replay_aws.run_map(None, {}, {}, workers=0)
