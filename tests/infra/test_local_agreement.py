"""The synthesized templates and the local runtime's plan agree: the same tables (keys, stream, TTL),
streams, functions (handlers and the variables that wire them) and event source mappings with the
same settings and on-failure queues. Both are built from eventstack/topology.py; this compares the
two results directly, so neither side can drift with its own defaults."""

from __future__ import annotations

from typing import Any

import pytest

from eventstack.local.plan import build_plan
from eventstack.topology import TOPOLOGY
from tests.infra.conftest import Synth

pytestmark = pytest.mark.infra

WIRING_VARIABLES = ("SERVICE_NAME", "EVENT_STORE_TABLE", "EVENT_STREAM_NAME")


def _strip(synth: Synth, name: str) -> str:
    prefix = f"eventstack-{synth.stage}-"
    assert name.startswith(prefix), name
    return name.removeprefix(prefix)


def _all_resources(synth: Synth) -> dict[str, dict[str, Any]]:
    return {f"{stack}/{key}": value for stack, template in synth.templates.items()
            for key, value in template["Resources"].items()}


def _source(synth: Synth, stack: str, arn: Any) -> tuple[str, str]:
    """(kind, logical name) of a mapping's EventSourceArn."""
    resources = synth.templates[stack]["Resources"]
    if isinstance(arn, dict) and "Fn::GetAtt" in arn:
        target = resources[arn["Fn::GetAtt"][0]]
        if target["Type"] == "AWS::DynamoDB::Table":
            return "dynamodb", _strip(synth, target["Properties"]["TableName"])
        assert target["Type"] == "AWS::Kinesis::Stream", target["Type"]
        return "kinesis", _strip(synth, target["Properties"]["Name"])
    parts = arn["Fn::Join"][1]
    tail = parts[-1]
    assert isinstance(tail, str) and ":stream/" in tail, arn
    return "kinesis", _strip(synth, tail.rsplit("/", 1)[1])


def _template_mappings(synth: Synth) -> set[tuple[Any, ...]]:
    found = set()
    for stack, template in synth.templates.items():
        resources = template["Resources"]
        for value in resources.values():
            if value["Type"] != "AWS::Lambda::EventSourceMapping":
                continue
            props = value["Properties"]
            function = resources[props["FunctionName"]["Ref"]]["Properties"]
            kind, source = _source(synth, stack, props["EventSourceArn"])
            queue = props["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
            assert resources[queue]["Type"] == "AWS::SQS::Queue"
            found.add((
                _strip(synth, function["FunctionName"]), function["Handler"], kind, source,
                props["BatchSize"], props["MaximumBatchingWindowInSeconds"], props["MaximumRetryAttempts"],
                props["MaximumRecordAgeInSeconds"], props["BisectBatchOnFunctionError"],
                props["ParallelizationFactor"], props["StartingPosition"],
                props["FunctionResponseTypes"] == ["ReportBatchItemFailures"],
            ))
    return found


def _plan_mappings() -> set[tuple[Any, ...]]:
    plan = build_plan()
    found = set()
    for mapping in plan.mappings:
        s = mapping.settings
        found.add((
            mapping.function, plan.function(mapping.function).handler, mapping.source_kind, mapping.source,
            s.batch_size, s.batching_window_seconds, s.max_retries, s.max_record_age_seconds,
            s.bisect_on_error, s.parallelization_factor, s.starting_position, s.report_batch_item_failures,
        ))
    return found


def test_the_same_event_source_mappings_with_the_same_settings(dev: Synth) -> None:
    local = _plan_mappings()
    assert len(local) == len(TOPOLOGY.services) + len(TOPOLOGY.subscriptions)
    assert _template_mappings(dev) == local


def test_the_same_tables_with_the_same_keys_streams_and_ttl(dev: Synth) -> None:
    plan = build_plan()
    templated = {}
    for value in _all_resources(dev).values():
        if value["Type"] == "AWS::DynamoDB::Table" and "TableName" in value["Properties"]:
            props = value["Properties"]
            templated[_strip(dev, props["TableName"])] = (
                {k["KeyType"]: k["AttributeName"] for k in props["KeySchema"]},
                "StreamSpecification" in props,
                props.get("TimeToLiveSpecification", {}).get("AttributeName"),
            )
    local = {
        table.logical_name: (
            {"HASH": table.partition_key[0], **({"RANGE": table.sort_key[0]} if table.sort_key else {})},
            table.stream,
            table.ttl_attribute,
        )
        for table in plan.tables
    }
    assert len(local) == len(TOPOLOGY.services) + len(TOPOLOGY.projections)
    assert templated == local


def test_the_same_streams(dev: Synth) -> None:
    templated = {
        _strip(dev, v["Properties"]["Name"])
        for v in _all_resources(dev).values() if v["Type"] == "AWS::Kinesis::Stream"
    }
    assert templated == set(build_plan().streams.values())


def test_the_same_functions_wired_by_the_same_variables(dev: Synth) -> None:
    plan = build_plan()
    templated = {}
    for value in _all_resources(dev).values():
        if value["Type"] == "AWS::Lambda::Function" and "Handler" in value["Properties"]:
            props = value["Properties"]
            if not props.get("FunctionName", "").startswith(f"eventstack-{dev.stage}-"):
                continue  # CDK's own helper functions (log retention, custom resources)
            if props["FunctionName"] == f"eventstack-{dev.stage}-replay-worker":
                continue  # replay --engine aws only; locally its core runs in the replay's own processes
            variables = props["Environment"]["Variables"]
            wiring = {k for k in variables if k in WIRING_VARIABLES or k.endswith(("_TABLE", "_TABLE_PARAMETER"))}
            templated[_strip(dev, props["FunctionName"])] = (props["Handler"], wiring)
    local = {
        function.name: (
            function.handler,
            {k for k in function.env if k in WIRING_VARIABLES or k.endswith(("_TABLE", "_TABLE_PARAMETER"))},
        )
        for function in plan.functions
    }
    assert templated == local
