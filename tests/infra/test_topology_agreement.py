"""The templates say what eventstack/topology.py says: every table, stream, mapping and setting.

The local runtime builds from the same declaration, so this is what keeps AWS and local alike.
"""

from __future__ import annotations

from typing import Any

import pytest

from escore import naming as rules
from eventstack.topology import TOPOLOGY, MappingSettings, Table
from tests.infra.conftest import Synth

pytestmark = pytest.mark.infra


def _resources(synth: Synth, service: str, kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in synth.template(service)["Resources"].items() if v["Type"] == kind}


def _table(synth: Synth, service: str, table: Table) -> tuple[str, dict[str, Any]]:
    name = f"eventstack-{synth.stage}-{table.logical_name}"
    matches = [
        (k, v["Properties"])
        for k, v in _resources(synth, service, "AWS::DynamoDB::Table").items()
        if v["Properties"]["TableName"] == name
    ]
    assert len(matches) == 1, f"{service}: no table {name}"
    return matches[0]


def _assert_table_matches(props: dict[str, Any], table: Table) -> None:
    keys = [{"AttributeName": table.partition_key[0], "KeyType": "HASH"}]
    attributes = [{"AttributeName": table.partition_key[0], "AttributeType": table.partition_key[1]}]
    if table.sort_key:
        keys.append({"AttributeName": table.sort_key[0], "KeyType": "RANGE"})
        attributes.append({"AttributeName": table.sort_key[0], "AttributeType": table.sort_key[1]})
    assert props["KeySchema"] == keys, table
    assert sorted(props["AttributeDefinitions"], key=str) == sorted(attributes, key=str), table
    if table.stream:
        assert props["StreamSpecification"] == {"StreamViewType": "NEW_IMAGE"}, table
    else:
        assert "StreamSpecification" not in props, table
    if table.ttl_attribute:
        assert props["TimeToLiveSpecification"] == {"AttributeName": table.ttl_attribute, "Enabled": True}, (
            table
        )
    else:
        assert "TimeToLiveSpecification" not in props, table


def _assert_mapping_matches(props: dict[str, Any], settings: MappingSettings) -> None:
    assert props["BatchSize"] == settings.batch_size
    assert props["MaximumBatchingWindowInSeconds"] == settings.batching_window_seconds
    assert props["MaximumRetryAttempts"] == settings.max_retries
    assert props["MaximumRecordAgeInSeconds"] == settings.max_record_age_seconds
    assert props["BisectBatchOnFunctionError"] is settings.bisect_on_error
    assert props["ParallelizationFactor"] == settings.parallelization_factor
    assert props["StartingPosition"] == settings.starting_position
    assert (
        props.get("FunctionResponseTypes") == ["ReportBatchItemFailures"]
    ) is settings.report_batch_item_failures


def _function(synth: Synth, service: str, function_name: str) -> tuple[str, dict[str, Any]]:
    physical = f"eventstack-{synth.stage}-{function_name}"
    matches = [
        (k, v["Properties"])
        for k, v in _resources(synth, service, "AWS::Lambda::Function").items()
        if v["Properties"]["FunctionName"] == physical
    ]
    assert len(matches) == 1, f"{service}: no function {physical}"
    return matches[0]


def _stream_ref(synth: Synth, owner: str, source: str) -> Any:
    if owner == source:
        (logical,) = _resources(synth, owner, "AWS::Kinesis::Stream")
        return {"Fn::GetAtt": [logical, "Arn"]}
    return {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":kinesis:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                f":stream/eventstack-{synth.stage}-{source}-events",
            ],
        ]
    }


def test_every_declared_table_exists_as_declared(each: Synth) -> None:
    for service in TOPOLOGY.services:
        _assert_table_matches(_table(each, service.name, service.event_store)[1], service.event_store)
        for projection in service.projections:
            _assert_table_matches(_table(each, service.name, projection.table)[1], projection.table)
    declared = len(TOPOLOGY.services) + len(TOPOLOGY.projections)
    assert sum(len(_resources(each, s.name, "AWS::DynamoDB::Table")) for s in TOPOLOGY.services) == declared


def test_every_service_has_its_stream(each: Synth) -> None:
    for service in TOPOLOGY.services:
        (stream,) = _resources(each, service.name, "AWS::Kinesis::Stream").values()
        assert stream["Properties"]["Name"] == f"eventstack-{each.stage}-{service.stream_logical_name}"


def test_functions_and_environment_follow_the_topology(each: Synth) -> None:
    for service in TOPOLOGY.services:
        store_logical, _ = _table(each, service.name, service.event_store)
        (stream_logical,) = _resources(each, service.name, "AWS::Kinesis::Stream")
        _, api = _function(each, service.name, service.api_function_name)
        assert api["Handler"] == service.api_handler
        api_env = api["Environment"]["Variables"]
        assert api_env[rules.ENV_SERVICE] == service.name
        assert api_env[rules.ENV_EVENT_STORE_TABLE] == {"Ref": store_logical}
        _, publisher = _function(each, service.name, service.publisher_function_name)
        assert publisher["Handler"] == service.publisher_handler
        env = publisher["Environment"]["Variables"]
        assert env[rules.ENV_EVENT_STORE_TABLE] == {"Ref": store_logical}
        assert env[rules.ENV_STREAM_NAME] == {"Ref": stream_logical}
        for projection in service.projections:
            table_logical, _ = _table(each, service.name, projection.table)
            _, projector = _function(each, service.name, projection.function_name)
            assert projector["Handler"] == projection.handler
            assert projector["Environment"]["Variables"][rules.table_env(projection.name)] == {
                "Ref": table_logical
            }
            assert api_env[rules.table_env(projection.name)] == {"Ref": table_logical}


def test_every_mapping_is_declared_with_its_settings(each: Synth) -> None:
    for service in TOPOLOGY.services:
        mappings = [
            m["Properties"]
            for m in _resources(each, service.name, "AWS::Lambda::EventSourceMapping").values()
        ]
        expected = 1 + sum(len(p.sources) for p in service.projections)
        assert len(mappings) == expected, service.name

        publisher_logical, _ = _function(each, service.name, service.publisher_function_name)
        store_logical, _ = _table(each, service.name, service.event_store)
        (publisher,) = [m for m in mappings if m["FunctionName"] == {"Ref": publisher_logical}]
        assert publisher["EventSourceArn"] == {"Fn::GetAtt": [store_logical, "StreamArn"]}
        _assert_mapping_matches(publisher, service.publisher_mapping)

        for projection in service.projections:
            logical, _ = _function(each, service.name, projection.function_name)
            own = [m for m in mappings if m["FunctionName"] == {"Ref": logical}]
            assert len(own) == len(projection.sources), projection.name
            for source in projection.sources:
                (mapping,) = [
                    m for m in own if m["EventSourceArn"] == _stream_ref(each, service.name, source)
                ]
                _assert_mapping_matches(mapping, projection.mapping)


def _api_paths(synth: Synth, service: str) -> set[tuple[str, str]]:
    """(method, path) of every API Gateway method of the service's REST API."""
    resources = _resources(synth, service, "AWS::ApiGateway::Resource")
    (api_id,) = _resources(synth, service, "AWS::ApiGateway::RestApi")

    def path_of(ref: Any) -> str:
        if ref == {"Fn::GetAtt": [api_id, "RootResourceId"]}:
            return ""
        props = resources[ref["Ref"]]["Properties"]
        return f"{path_of(props['ParentId'])}/{props['PathPart']}"

    methods = _resources(synth, service, "AWS::ApiGateway::Method").values()
    return {(m["Properties"]["HttpMethod"], path_of(m["Properties"]["ResourceId"]) or "/") for m in methods}


def test_api_routes_are_the_declared_ones(each: Synth) -> None:
    for service in TOPOLOGY.services:
        routed = _api_paths(each, service.name)
        declared = {(r.method, r.resource) for r in service.routes}
        assert {(method, path) for method, path in routed if method != "ANY"} == declared, service.name
        # Undeclared methods and paths reach the function too, for the contract's JSON 405/404.
        assert all(("ANY", path) in routed for _, path in declared)
        assert ("ANY", "/{proxy+}") in routed
