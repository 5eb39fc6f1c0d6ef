"""The replay machine on the synthesized shared stack (infra/replay.py): the Distributed Map's definition,
checked by our own assertions and by the service's rules (the npm package asl-validator, pinned), the
worker function, and the grants of the worker and of the state machine."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from escore import naming
from eventstack.topology import TOPOLOGY
from infra import replay
from tests.infra.conftest import Synth

pytestmark = pytest.mark.infra

ASL_VALIDATOR = "asl-validator@4.0.0"
ACCOUNT, REGION = "123456789012", "us-east-1"


def _shared(synth: Synth) -> dict[str, Any]:
    resources: dict[str, Any] = synth.template("shared")["Resources"]
    return resources


def _id_of(synth: Synth, resource_type: str, predicate: Any = lambda r: True) -> str:
    found = [k for k, r in _shared(synth).items() if r["Type"] == resource_type and predicate(r)]
    assert len(found) == 1, found
    return found[0]


def _worker_id(synth: Synth) -> str:
    name = f"eventstack-{synth.stage}-{naming.replay_worker_function()}"
    return _id_of(synth, "AWS::Lambda::Function", lambda r: r["Properties"]["FunctionName"] == name)


def _results_id(synth: Synth) -> str:
    return _id_of(
        synth, "AWS::S3::Bucket", lambda r: f"eventstack-{synth.stage}-audit-" in json.dumps(r["Properties"].get("BucketName"))
    )


def _machine(synth: Synth) -> dict[str, Any]:
    return _shared(synth)[_id_of(synth, "AWS::StepFunctions::StateMachine")]


def definition(synth: Synth) -> dict[str, Any]:
    """The machine's ASL with CloudFormation's references filled in as a deployment would."""
    worker, results = _worker_id(synth), _results_id(synth)
    text = ""
    for part in _machine(synth)["Properties"]["DefinitionString"]["Fn::Join"][1]:
        if isinstance(part, str):
            text += part
        elif part == {"Ref": "AWS::Partition"}:
            text += "aws"
        elif part == {"Fn::GetAtt": [worker, "Arn"]}:
            text += f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:eventstack-{synth.stage}-replay-worker"
        elif part == {"Ref": results}:
            text += f"eventstack-{synth.stage}-audit-{ACCOUNT}-{REGION}"
        else:
            raise AssertionError(f"unexpected reference in the definition: {part}")
    asl: dict[str, Any] = json.loads(text)
    return asl


def test_machine_is_a_standard_traced_logged_machine_named_by_the_rules(each: Synth) -> None:
    props = _machine(each)["Properties"]
    assert props["StateMachineName"] == f"eventstack-{each.stage}-{naming.replay_state_machine()}"
    assert props["StateMachineType"] == "STANDARD"  # a Distributed Map's parent must be
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is False  # events carry user data


def test_the_one_state_is_a_distributed_map_over_the_manifest(each: Synth) -> None:
    asl = definition(each)
    assert asl["StartAt"] == "FoldEveryFile" and list(asl["States"]) == ["FoldEveryFile"]
    assert asl["TimeoutSeconds"] == 24 * 3600
    fold = asl["States"]["FoldEveryFile"]
    assert fold["Type"] == "Map" and fold["End"] is True
    assert fold["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    reader = fold["ItemReader"]
    assert reader["Resource"] == "arn:aws:states:::s3:getObject"
    assert reader["ReaderConfig"] == {"InputType": "JSON"}
    assert reader["Parameters"] == {"Bucket": f"eventstack-{each.stage}-audit-{ACCOUNT}-{REGION}", "Key.$": "$.plan.manifest_key"}
    assert "ItemSelector" not in fold  # a child's input is its manifest entry: the worker's whole event
    # concurrency per execution, from the target table's write budget; never a fixed number as well
    assert fold["MaxConcurrencyPath"] == "$.max_concurrency" and "MaxConcurrency" not in fold
    # a failed file does not abort the others; run_map reports it from the Map Run's counts
    assert fold["ToleratedFailurePercentage"] == 100
    assert fold["ResultPath"] is None  # the results go to S3 (ResultWriter), not into the state's output
    assert fold["Label"] == "FoldEveryFile"
    assert fold["ResultWriter"] == {
        "Resource": "arn:aws:states:::s3:putObject",
        "Parameters": {"Bucket": f"eventstack-{each.stage}-audit-{ACCOUNT}-{REGION}", "Prefix.$": "$.plan.results_prefix"},
    }


def test_each_item_is_one_task_invoking_the_worker_retried_alone(each: Synth) -> None:
    processor = definition(each)["States"]["FoldEveryFile"]["ItemProcessor"]
    assert processor["StartAt"] == "FoldFile" and list(processor["States"]) == ["FoldFile"]
    task = processor["States"]["FoldFile"]
    assert task["Type"] == "Task" and task["End"] is True
    assert task["Resource"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:eventstack-{each.stage}-replay-worker"
    retriers = task["Retry"]
    assert retriers[-1]["ErrorEquals"] == ["States.ALL"]  # must be the last retrier
    assert retriers[-1]["MaxAttempts"] == replay.ITEM_RETRY_ATTEMPTS
    assert retriers[-1]["JitterStrategy"] == "FULL"
    assert "Lambda.ServiceException" in retriers[0]["ErrorEquals"]
    assert "Catch" not in task  # a file that still fails is a failed item of the Map Run, reported


@pytest.fixture(scope="module")
def npx() -> str:
    found = shutil.which("npx")
    if found is None:
        pytest.fail("npx not found: Node.js is needed to run asl-validator")
    return found


def _validate(npx: str, asl: dict[str, Any], path: Path) -> subprocess.CompletedProcess[str]:
    path.write_text(json.dumps(asl))
    return subprocess.run(
        [npx, "--yes", ASL_VALIDATOR, "--json-path", str(path)], capture_output=True, text=True, timeout=300
    )


def test_definition_passes_the_services_rules(each: Synth, npx: str, tmp_path: Path) -> None:
    result = _validate(npx, definition(each), tmp_path / "replay.asl.json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("MaxConcurrency", 10, "MaxConcurrencyPath"),  # both a fixed and a per-execution concurrency
        ("ToleratedFailurePercentage", 150, "ToleratedFailurePercentage"),
        ("ExecutionType", "SLOW", "ExecutionType"),
    ],
)
def test_the_validator_knows_the_distributed_map_rules(
    dev: Synth, npx: str, tmp_path: Path, field: str, value: Any, complaint: str
) -> None:
    """The same check rejects what the service would: so its pass above is worth something."""
    broken = definition(dev)
    state = broken["States"]["FoldEveryFile"]
    (state["ItemProcessor"]["ProcessorConfig"] if field == "ExecutionType" else state)[field] = value
    result = _validate(npx, broken, tmp_path / "broken.asl.json")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "is invalid" in output, output
    assert complaint in output, output


def test_worker_function_fits_a_file_in_lambdas_fifteen_minutes(each: Synth) -> None:
    props = _shared(each)[_worker_id(each)]["Properties"]
    assert props["Timeout"] == 900
    assert props["MemorySize"] == replay.WORKER_MEMORY_MB
    assert props["Handler"] == replay.WORKER_HANDLER
    assert props["Architectures"] == ["arm64"]


def _statements(synth: Synth, role_id: str) -> list[dict[str, Any]]:
    found = []
    for resource in _shared(synth).values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in resource["Properties"]["Roles"]:
            found += resource["Properties"]["PolicyDocument"]["Statement"]
    return found


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return actions if isinstance(actions, list) else [actions]


def _resources(statement: dict[str, Any]) -> list[Any]:
    resources = statement["Resource"]
    return resources if isinstance(resources, list) else [resources]


def test_worker_reads_the_plan_prefix_and_writes_the_projection_tables_only(each: Synth) -> None:
    role = _shared(each)[_worker_id(each)]["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = _statements(each, role)
    services = {a.split(":")[0] for s in statements for a in _actions(s)}
    assert services == {"logs", "xray", "s3", "dynamodb"}
    s3 = [s for s in statements if any(a.startswith("s3:") for a in _actions(s))]
    assert len(s3) == 1 and _actions(s3[0]) == ["s3:GetObject"]
    assert s3[0]["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [_results_id(each), "Arn"]}, "/replay-plans/*"]]}
    dynamodb = [s for s in statements if any(a.startswith("dynamodb:") for a in _actions(s))]
    assert len(dynamodb) == 1
    assert sorted(_actions(dynamodb[0])) == ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    tables = [json.dumps(r).split(":table/")[1].split('"')[0] for r in _resources(dynamodb[0])]
    expected = []
    for _, projection in TOPOLOGY.projections:
        expected += [naming.physical(each.stage, projection.name), naming.table_generations(each.stage, projection.name)]
    assert sorted(tables) == sorted(expected) and len(tables) == len(set(tables))
    event_stores = {naming.physical(each.stage, s.event_store.logical_name) for s in TOPOLOGY.services}
    assert not event_stores & {t.removesuffix("-g*") for t in tables}  # never an event store


def test_state_machine_invokes_the_worker_and_reads_the_results_bucket_only(each: Synth) -> None:
    role = _machine(each)["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    statements = _statements(each, role)
    worker, results = _worker_id(each), _results_id(each)
    invoke = [s for s in statements if "lambda:InvokeFunction" in _actions(s)]
    assert len(invoke) == 1
    assert {json.dumps(r) for r in _resources(invoke[0])} <= {
        json.dumps({"Fn::GetAtt": [worker, "Arn"]}),
        json.dumps({"Fn::Join": ["", [{"Fn::GetAtt": [worker, "Arn"]}, ":*"]]}),
    }
    s3 = [s for s in statements if any(a.startswith("s3:") for a in _actions(s))]
    # the ItemReader's manifest read and the ResultWriter's writes, on the audit results bucket only
    allowed = {"s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"}
    assert all(set(_actions(s)) <= allowed for s in s3)
    assert all(results in json.dumps(s["Resource"]) and "Archive" not in json.dumps(s["Resource"]) for s in s3)
    assert not any("s3:DeleteObject" in _actions(s) for s in s3)
    # the Distributed Map's own grants: start, describe and stop its child executions
    states = {a for s in statements for a in _actions(s) if a.startswith("states:")}
    assert {"states:StartExecution", "states:DescribeExecution", "states:StopExecution"} <= states


def test_operator_policy_is_the_plan_prefix_and_this_machine_only(each: Synth) -> None:
    (policy,) = [p for p in _shared(each).values() if p["Type"] == "AWS::IAM::ManagedPolicy"
                 and p["Properties"]["ManagedPolicyName"] == f"eventstack-{each.stage}-replay-operator"]
    statements = {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}
    results, machine = _results_id(each), _id_of(each, "AWS::StepFunctions::StateMachine")
    assert statements["ListThePlans"]["Condition"] == {"StringLike": {"s3:prefix": ["replay-plans/*"]}}
    plans = statements["WriteAndReadThePlans"]
    assert plans["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [results, "Arn"]}, "/replay-plans/*"]]}
    assert "s3:DeleteObject" not in _actions(plans)
    assert statements["StartTheReplayMachine"]["Resource"] == {"Ref": machine}
    assert _actions(statements["StartTheReplayMachine"]) == ["states:StartExecution"]
    name = f"eventstack-{each.stage}-replay"
    watched = [json.dumps(r) for sid in ("WatchItsExecutions", "WatchItsMapRuns") for r in _resources(statements[sid])]
    assert all(name in w or machine in w for w in watched), watched
    actions = {a for s in statements.values() for a in _actions(s)}
    assert {a.split(":")[0] for a in actions} == {"s3", "states"}
    assert not {"states:StopExecution", "states:DeleteStateMachine", "states:UpdateStateMachine"} & actions
