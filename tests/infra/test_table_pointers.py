"""Blue/green replay on the deployed stack: every function that reads or writes a projection table
resolves it through the projection's active-table pointer and may use every replay generation.

From the topology: a projection is used by its projector (read and write) and by the API of the
service that owns it (read). Each such function gets `<NAME>_TABLE_PARAMETER`, `ssm:GetParameter` on
exactly that parameter, and its DynamoDB actions on the deployed table plus `<table>-g*`. The pointer
itself is never a CloudFormation resource (a deploy would reset a pointer replay switched).
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any

import pytest

from escore import naming as rules
from eventstack.replay_tables import GENERATION_RE
from eventstack.topology import TOPOLOGY, Projection, Service
from infra import naming
from infra.tables import PROJECTION_READ_ACTIONS, PROJECTION_WRITE_ACTIONS
from tests.infra.conftest import Synth

pytestmark = pytest.mark.infra

PROJECTIONS = [p.name for _, p in TOPOLOGY.projections]


def _arn(service: str, resource: str) -> dict[str, Any]:
    """What Stack.format_arn synthesizes for a stage-agnostic ARN of this stack's account and region."""
    return {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                f":{service}:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                f":{resource}",
            ],
        ]
    }


def pointer_arn(stage: str, projection: str) -> dict[str, Any]:
    return _arn("ssm", f"parameter/eventstack/{stage}/projections/{projection}/table")


def generations_arn(stage: str, projection: str) -> dict[str, Any]:
    return _arn("dynamodb", f"table/eventstack-{stage}-{projection}-g*")


def _users(service: Service, projection: Projection) -> dict[str, bool]:
    """Topology function name -> whether it writes the projection's table."""
    return {projection.function_name: True, service.api_function_name: False}


def _resources(synth: Synth, service: str, kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in synth.template(service)["Resources"].items() if v["Type"] == kind}


def _function(synth: Synth, service: str, function_name: str) -> tuple[str, dict[str, Any]]:
    physical = f"eventstack-{synth.stage}-{function_name}"
    (match,) = [
        (k, v["Properties"])
        for k, v in _resources(synth, service, "AWS::Lambda::Function").items()
        if v["Properties"]["FunctionName"] == physical
    ]
    return match


def _table_logical(synth: Synth, service: str, projection: str) -> str:
    (logical,) = [
        k
        for k, v in _resources(synth, service, "AWS::DynamoDB::Table").items()
        if v["Properties"]["TableName"] == f"eventstack-{synth.stage}-{projection}"
    ]
    return logical


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _role_statements(synth: Synth, service: str, function: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statement of the policies attached to the function's role."""
    role = function["Role"]["Fn::GetAtt"][0]
    return [
        statement
        for policy in _resources(synth, service, "AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _granted(statements: list[dict[str, Any]], resource: Any) -> set[str]:
    """The actions the statements allow on `resource` (named exactly)."""
    return {
        action
        for s in statements
        if s["Effect"] == "Allow" and resource in _as_list(s["Resource"])
        for action in _as_list(s["Action"])
    }


# --- generation names agree with replay ---------------------------------------------------------


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_generation_names_agree_with_replay(projection: str) -> None:
    for stage in ("dev", "prod"):
        deployed = naming.table(stage, projection)
        generation = rules.table_generation(deployed, "20251126152646")  # what `replay --into new` names it
        assert GENERATION_RE.sub("", generation) == deployed
        assert fnmatch.fnmatchcase(generation, naming.table_generations(stage, projection))
        assert not fnmatch.fnmatchcase(deployed, naming.table_generations(stage, projection))


# --- environment ------------------------------------------------------------------------------------


def test_every_user_of_a_projection_gets_its_pointer_variable(each: Synth) -> None:
    for service, projection in TOPOLOGY.projections:
        table = _table_logical(each, service.name, projection.name)
        for function_name in _users(service, projection):
            _, function = _function(each, service.name, function_name)
            env = function["Environment"]["Variables"]
            assert env[rules.table_parameter_env(projection.name)] == (
                f"/eventstack/{each.stage}/projections/{projection.name}/table"
            ), function_name
            assert env[rules.table_env(projection.name)] == {"Ref": table}, function_name


def test_functions_that_use_no_projection_get_no_pointer(each: Synth) -> None:
    users = {f for service, p in TOPOLOGY.projections for f in _users(service, p)}
    for service in TOPOLOGY.services:
        for fn in _resources(each, service.name, "AWS::Lambda::Function").values():
            name = fn["Properties"]["FunctionName"].removeprefix(f"eventstack-{each.stage}-")
            if name not in users:
                env = fn["Properties"]["Environment"]["Variables"]
                assert not [k for k in env if k.endswith("_TABLE_PARAMETER")], name


# --- IAM ------------------------------------------------------------------------------------------------


def test_ssm_grant_is_get_parameter_on_exactly_the_pointers_used(each: Synth) -> None:
    for service in TOPOLOGY.services:
        for fn in _resources(each, service.name, "AWS::Lambda::Function").values():
            props = fn["Properties"]
            name = props["FunctionName"].removeprefix(f"eventstack-{each.stage}-")
            expected = [
                pointer_arn(each.stage, p.name) for p in service.projections if name in _users(service, p)
            ]
            ssm = [
                s for s in _role_statements(each, service.name, props) if "ssm:" in json.dumps(s["Action"])
            ]
            granted = [r for s in ssm for r in _as_list(s["Resource"])]
            assert sorted(map(json.dumps, granted)) == sorted(map(json.dumps, expected)), name
            for statement in ssm:
                assert statement["Effect"] == "Allow" and _as_list(statement["Action"]) == [
                    "ssm:GetParameter"
                ]
                assert "Condition" not in statement, name


def test_table_grants_cover_the_deployed_table_and_its_generations(each: Synth) -> None:
    read, write = set(PROJECTION_READ_ACTIONS), set(PROJECTION_WRITE_ACTIONS)
    assert {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem"} <= read
    assert {
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:ConditionCheckItem",
    } <= (read | write)
    for service, projection in TOPOLOGY.projections:
        table = {"Fn::GetAtt": [_table_logical(each, service.name, projection.name), "Arn"]}
        generations = generations_arn(each.stage, projection.name)
        for function_name, writes in _users(service, projection).items():
            _, function = _function(each, service.name, function_name)
            statements = _role_statements(each, service.name, function)
            expected = read | write if writes else read
            assert _granted(statements, table) == expected, (function_name, projection.name)
            assert _granted(statements, generations) == expected, (function_name, projection.name)


def test_generation_wildcards_only_with_explicit_dynamodb_actions(each: Synth) -> None:
    """`-g*` appears only in grants of explicit DynamoDB data actions, to the projection's users."""
    for service in TOPOLOGY.services:
        for fn in _resources(each, service.name, "AWS::Lambda::Function").values():
            props = fn["Properties"]
            name = props["FunctionName"].removeprefix(f"eventstack-{each.stage}-")
            allowed = [
                json.dumps(generations_arn(each.stage, p.name))
                for p in service.projections
                if name in _users(service, p)
            ]
            for statement in _role_statements(each, service.name, props):
                for resource in _as_list(statement["Resource"]):
                    text = json.dumps(resource)
                    if "-g*" in text:
                        assert text in allowed, (name, text)
                        actions = _as_list(statement["Action"])
                        assert all(a.startswith("dynamodb:") and "*" not in a for a in actions), (
                            name,
                            actions,
                        )


def test_pointer_parameters_are_not_cloudformation_resources(each: Synth) -> None:
    """A deployed pointer would be reset to the template's value by the next deploy after a replay."""
    for name, parameter in each.resources("AWS::SSM::Parameter").items():
        assert "/projections/" not in json.dumps(parameter["Properties"].get("Name")), name
    for stack, template in each.templates.items():
        assert "/projections/" not in json.dumps(template.get("Outputs", {})), stack


# --- cdk-nag ------------------------------------------------------------------------------------------


def test_generation_wildcard_is_acknowledged_only_on_the_functions_granted_it(each: Synth) -> None:
    expected: set[tuple[str, str]] = set()
    for service, projection in TOPOLOGY.projections:
        construct = {True: f"Projection-{projection.name}/Function", False: "ApiFunction"}
        for writes in _users(service, projection).values():
            expected.add(
                (
                    f"eventstack-{each.stage}-{service.name}/{construct[writes]}",
                    f"table/eventstack-{each.stage}-{projection.name}-g*]",
                )
            )
    for _, projection in TOPOLOGY.projections:  # the replay worker folds into every projection (infra/replay.py)
        expected.add((f"eventstack-{each.stage}-shared/Replay/Worker", f"table/eventstack-{each.stage}-{projection.name}-g*]"))
    found: set[tuple[str, str]] = set()
    for report in each.report()["pluginReports"]:
        for violation in report.get("suppressedViolations", []):
            if "-g*]" not in violation["ruleName"]:
                continue
            assert violation["ruleName"].startswith("AwsSolutions-IAM5[Resource::arn:"), violation["ruleName"]
            at = violation["acknowledgedAt"]
            for construct in violation["violatingConstructs"]:
                assert construct["constructPath"].startswith(f"{at}/Role/"), (at, construct["constructPath"])
            found.add((at, violation["ruleName"].rsplit(":", 1)[1]))
    assert found == expected
