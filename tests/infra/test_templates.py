"""Template assertions for every property issue 3 names, on the synthesized CloudFormation."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from eventstack.topology import TOPOLOGY
from infra import bundling
from infra.stages import STAGES
from publisher.marks import MARK_PREFIX
from tests.infra.conftest import Synth

pytestmark = pytest.mark.infra

SERVICES = [s.name for s in TOPOLOGY.services]


def _t(synth: Synth, stack: str) -> Template:
    return Template.from_json(synth.template(stack))


def test_one_stack_per_service_and_a_shared_one(each: Synth) -> None:
    expected = {f"eventstack-{each.stage}-{name}" for name in [*SERVICES, "shared"]}
    assert set(each.templates) == expected


def test_stacks_are_not_coupled_through_exports(each: Synth) -> None:
    for name, template in each.templates.items():
        text = json.dumps(template)
        assert "Fn::ImportValue" not in text, name
        assert not any("Export" in output for output in template.get("Outputs", {}).values()), name


# --- event store, projections ---------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_event_store_has_pitr_new_image_stream_and_stage_deletion_protection(
    each: Synth, service: str
) -> None:
    store = TOPOLOGY.service(service).event_store
    _t(each, service).has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "TableName": f"eventstack-{each.stage}-{store.logical_name}",
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "StreamSpecification": {"StreamViewType": "NEW_IMAGE"},
            "DeletionProtectionEnabled": STAGES[each.stage].deletion_protection,
            "BillingMode": "PAY_PER_REQUEST",
        },
    )


def test_every_table_has_pitr(each: Synth) -> None:
    tables = each.resources("AWS::DynamoDB::Table")
    assert len(tables) == len(TOPOLOGY.services) + len(TOPOLOGY.projections)
    for name, table in tables.items():
        props = table["Properties"]
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, name


def test_prod_protects_tables_from_deletion(prod: Synth) -> None:
    for name, table in prod.resources("AWS::DynamoDB::Table").items():
        assert table["Properties"]["DeletionProtectionEnabled"] is True, name
        assert table["DeletionPolicy"] == "Retain", name


# --- Kinesis ----------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_stream_is_kms_encrypted_with_stage_capacity_mode(each: Synth, service: str) -> None:
    stage = STAGES[each.stage]
    expected: dict[str, Any] = {
        "Name": f"eventstack-{each.stage}-{service}-events",
        "StreamEncryption": {"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"},
        "RetentionPeriodHours": stage.stream_retention_hours,
        "StreamModeDetails": {"StreamMode": stage.stream_mode.upper()},
    }
    if stage.stream_mode == "provisioned":
        expected["ShardCount"] = stage.stream_shards
    _t(each, service).has_resource_properties("AWS::Kinesis::Stream", expected)


# --- event source mappings and their failure queues ------------------------------------------


def _mappings(synth: Synth) -> dict[str, dict[str, Any]]:
    return synth.resources("AWS::Lambda::EventSourceMapping")


def test_every_mapping_is_bounded_ordered_and_reports_partial_failures(each: Synth) -> None:
    mappings = _mappings(each)
    assert len(mappings) == len(TOPOLOGY.services) + len(TOPOLOGY.subscriptions)
    for name, mapping in mappings.items():
        props = mapping["Properties"]
        assert 0 <= props["MaximumRetryAttempts"] <= 10, name
        assert 60 <= props["MaximumRecordAgeInSeconds"] <= 604800, name
        # Projectors bisect to isolate a poison record; the publisher must retry a failed batch from
        # its same first record, which keys the batch's attempt mark (lambdas/publisher/handler.py).
        publisher = "StreamArn" in json.dumps(props["EventSourceArn"])  # the event store's DynamoDB stream
        assert props["BisectBatchOnFunctionError"] is (not publisher), name
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"], name
        assert props["StartingPosition"] == "TRIM_HORIZON", name
        assert "BatchSize" in props and "MaximumBatchingWindowInSeconds" in props, name
        assert "OnFailure" in props["DestinationConfig"], name


def test_publishers_keep_order(each: Synth) -> None:
    for service in SERVICES:
        _t(each, service).has_resource_properties(
            "AWS::Lambda::EventSourceMapping",
            {
                "EventSourceArn": {"Fn::GetAtt": [Match.string_like_regexp("^EventStoreTable"), "StreamArn"]},
                "ParallelizationFactor": 1,
                "BisectBatchOnFunctionError": False,
            },
        )


def _publisher_statements(synth: Synth, service: str) -> list[dict[str, Any]]:
    policies = [
        v for k, v in synth.resources("AWS::IAM::Policy", service).items()
        if k.split("/")[-1].startswith("PublisherFunctionRole")
    ]
    assert len(policies) == 1, service
    return list(policies[0]["Properties"]["PolicyDocument"]["Statement"])


def _actions_on(statements: list[dict[str, Any]], logical_id: str) -> set[str]:
    return {
        action
        for s in statements
        if s["Effect"] == "Allow" and s["Resource"] == {"Fn::GetAtt": [logical_id, "Arn"]}
        for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }


@pytest.mark.parametrize("service", SERVICES)
def test_publisher_may_mark_its_attempts_and_read_its_own_stream_back(each: Synth, service: str) -> None:
    """Each event once on Kinesis: an attempt mark (PutItem) in its own event store, read-back of its
    own stream; nothing more on either (no read or delete of events, no other table or stream)."""
    resources = each.template(service)["Resources"]
    (store,) = [k for k, v in resources.items() if v["Type"] == "AWS::DynamoDB::Table" and k.startswith("EventStore")]
    (stream,) = [k for k, v in resources.items() if v["Type"] == "AWS::Kinesis::Stream"]
    statements = _publisher_statements(each, service)
    assert _actions_on(statements, store) == {"dynamodb:PutItem"}
    (put,) = [s for s in statements if s["Resource"] == {"Fn::GetAtt": [store, "Arn"]}]
    assert put["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{MARK_PREFIX}*"]}}
    assert _actions_on(statements, stream) == {
        "kinesis:PutRecord", "kinesis:PutRecords",
        "kinesis:ListShards", "kinesis:GetShardIterator", "kinesis:GetRecords",
    }
    # A batch can be re-attempted while its records are in the DynamoDB stream (24 hours): whatever an
    # earlier attempt put on Kinesis must still be there to be read back.
    assert resources[stream]["Properties"]["RetentionPeriodHours"] >= 24


def test_on_failure_destinations_are_encrypted_tls_only_alarmed_queues(each: Synth) -> None:
    for service in SERVICES:
        template = each.template(service)
        resources = template["Resources"]
        queues = {k for k, v in resources.items() if v["Type"] == "AWS::SQS::Queue"}
        destinations = {
            m["Properties"]["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
            for m in resources.values()
            if m["Type"] == "AWS::Lambda::EventSourceMapping"
        }
        assert destinations == queues, service
        for queue in queues:
            assert resources[queue]["Properties"]["SqsManagedSseEnabled"] is True, queue
            policies = [
                v["Properties"]["PolicyDocument"]["Statement"]
                for v in resources.values()
                if v["Type"] == "AWS::SQS::QueuePolicy" and {"Ref": queue} in v["Properties"]["Queues"]
            ]
            assert any(
                s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
                for statements in policies
                for s in statements
            ), f"{queue} is not TLS-only"
            assert any(
                v["Type"] == "AWS::CloudWatch::Alarm"
                and v["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
                and v["Properties"]["Dimensions"][0]["Value"] == {"Fn::GetAtt": [queue, "QueueName"]}
                and v["Properties"]["Threshold"] == 1
                for v in resources.values()
            ), f"{queue} has no depth alarm"


# --- functions ----------------------------------------------------------------------------------


def test_functions_are_arm64_newest_python_traced_json_logged_with_own_role(each: Synth) -> None:
    functions = each.resources("AWS::Lambda::Function")
    roles = [(name.split("/")[0], json.dumps(f["Properties"]["Role"])) for name, f in functions.items()]
    assert len(roles) == len(set(roles)), "functions share a role"
    newest = max(
        (r for r in bundling.lambda_.Runtime.ALL if r.name.startswith("python")),  # type: ignore[attr-defined]
        key=lambda r: tuple(int(x) for x in r.name.removeprefix("python").split(".")),
    )
    for name, fn in functions.items():
        props = fn["Properties"]
        assert props["Architectures"] == ["arm64"], name
        assert props["Runtime"] == newest.name == bundling.RUNTIME.name, name
        assert props["TracingConfig"] == {"Mode": "Active"}, name
        assert props["LoggingConfig"]["LogFormat"] == "JSON", name
        assert props["LoggingConfig"]["ApplicationLogLevel"] == STAGES[each.stage].log_level, name
        env = props["Environment"]["Variables"]
        for variable in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"):
            assert variable in env, (name, variable)
        assert props["MemorySize"] >= 256 and props["Timeout"] > 3, name


def test_log_groups_expire(each: Synth) -> None:
    for name, group in each.resources("AWS::Logs::LogGroup").items():
        assert group["Properties"]["RetentionInDays"] == STAGES[each.stage].log_retention_days, name


# --- IAM --------------------------------------------------------------------------------------------


def _statements(synth: Synth) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for name, policy in synth.resources("AWS::IAM::Policy").items():
        found += [(name, s) for s in policy["Properties"]["PolicyDocument"]["Statement"]]
    for name, role in synth.resources("AWS::IAM::Role").items():
        for inline in role["Properties"].get("Policies", []):
            found += [(name, s) for s in inline["PolicyDocument"]["Statement"]]
    return found


def test_no_statement_allows_every_action_or_every_action_of_a_service(each: Synth) -> None:
    statements = _statements(each)
    assert statements
    for name, statement in statements:
        actions = statement.get("Action", [])
        for action in [actions] if isinstance(actions, str) else actions:
            assert action != "*" and not re.fullmatch(r"[a-z0-9-]+:\*", action), (name, action)
        assert "NotAction" not in statement, name


def test_wildcard_resources_only_where_aws_allows_nothing_else(each: Synth) -> None:
    allowed = {"xray:PutTraceSegments", "xray:PutTelemetryRecords", "dynamodb:ListStreams"}
    # the replay state machine's X-Ray and vended-log delivery actions (infra/replay.py, infra/nag.py)
    allowed |= {"xray:GetSamplingRules", "xray:GetSamplingTargets"}
    allowed |= {f"logs:{a}" for a in ("CreateLogDelivery", "GetLogDelivery", "UpdateLogDelivery", "DeleteLogDelivery",
                                      "ListLogDeliveries", "PutResourcePolicy", "DescribeResourcePolicies",
                                      "DescribeLogGroups")}
    for name, statement in _statements(each):
        if statement.get("Resource") == "*":
            actions = statement["Action"]
            assert set([actions] if isinstance(actions, str) else actions) <= allowed, name


# --- API ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_api_methods_require_authorization(each: Synth, service: str) -> None:
    expected = "AWS_IAM" if each.context.get("auth", "iam") == "iam" else "COGNITO_USER_POOLS"
    methods = each.resources("AWS::ApiGateway::Method", service)
    assert methods
    for name, method in methods.items():
        assert method["Properties"]["AuthorizationType"] == expected, name


@pytest.mark.parametrize("service", SERVICES)
def test_api_stage_traces_logs_and_throttles(each: Synth, service: str) -> None:
    stage = STAGES[each.stage]
    template = _t(each, service)
    template.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "StageName": each.stage,
            "TracingEnabled": True,
            "AccessLogSetting": {
                "DestinationArn": Match.any_value(),
                "Format": Match.string_like_regexp("requestId"),
            },
            "MethodSettings": Match.array_with(
                [
                    Match.object_like(
                        {
                            "LoggingLevel": stage.api_execution_log_level,
                            "DataTraceEnabled": False,
                            "ThrottlingRateLimit": stage.throttle_rate,
                            "ThrottlingBurstLimit": stage.throttle_burst,
                            "HttpMethod": "*",
                            "ResourcePath": "/*",
                        }
                    )
                ]
            ),
        },
    )
    template.has_resource_properties(
        "AWS::ApiGateway::RequestValidator", {"ValidateRequestBody": True, "ValidateRequestParameters": True}
    )


@pytest.mark.parametrize("service", SERVICES)
def test_body_methods_are_validated_as_json_objects(each: Synth, service: str) -> None:
    for name, method in each.resources("AWS::ApiGateway::Method", service).items():
        props = method["Properties"]
        if props["HttpMethod"] in ("POST", "PATCH"):
            assert "RequestValidatorId" in props and "application/json" in props["RequestModels"], name


@pytest.mark.parametrize("service", SERVICES)
def test_unknown_routes_reach_the_function_and_gateway_errors_are_json(each: Synth, service: str) -> None:
    resources = each.resources("AWS::ApiGateway::Resource", service)
    assert any(r["Properties"]["PathPart"] == "{proxy+}" for r in resources.values())
    responses = each.resources("AWS::ApiGateway::GatewayResponse", service)
    types = {r["Properties"]["ResponseType"] for r in responses.values()}
    assert {
        "DEFAULT_4XX",
        "DEFAULT_5XX",
        "MISSING_AUTHENTICATION_TOKEN",
        "BAD_REQUEST_BODY",
        "THROTTLED",
    } <= types
    for name, response in responses.items():
        body = response["Properties"]["ResponseTemplates"]["application/json"]
        assert body.startswith('{"error": "'), name


def test_prod_option_uses_the_shared_cognito_pool(prod: Synth) -> None:
    Template.from_json(prod.template("shared")).has_resource_properties(
        "AWS::Cognito::UserPool", {"MfaConfiguration": "ON"}
    )
    for service in SERVICES:
        _t(prod, service).has_resource_properties(
            "AWS::ApiGateway::Authorizer", {"Type": "COGNITO_USER_POOLS"}
        )


# --- archive --------------------------------------------------------------------------------------------


def _archive_bucket(synth: Synth) -> dict[str, Any]:
    buckets = synth.resources("AWS::S3::Bucket", "shared")
    (bucket,) = [b for b in buckets.values() if b["Properties"].get("ObjectLockEnabled")]
    return bucket


def test_archive_bucket_is_versioned_locked_private_encrypted_logged_tiered(each: Synth) -> None:
    stage = STAGES[each.stage]
    mode = each.context.get("object_lock_mode", stage.object_lock_mode).upper()
    props = _archive_bucket(each)["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["ObjectLockConfiguration"] == {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": mode, "Days": stage.object_lock_days}},
    }
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert props["LoggingConfiguration"]["DestinationBucketName"]
    classes = {
        t["StorageClass"] for r in props["LifecycleConfiguration"]["Rules"] for t in r.get("Transitions", [])
    }
    assert classes == {"STANDARD_IA", "GLACIER_IR"}


def test_buckets_are_tls_only(each: Synth) -> None:
    buckets = each.resources("AWS::S3::Bucket", "shared")
    policies = each.resources("AWS::S3::BucketPolicy", "shared")
    assert len(buckets) == 3  # the archive, its access logs, the audit results (infra/audit.py)
    for logical in (name.split("/")[1] for name in buckets):
        statements = [
            s
            for p in policies.values()
            if p["Properties"]["Bucket"] == {"Ref": logical}
            for s in p["Properties"]["PolicyDocument"]["Statement"]
        ]
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for s in statements
        ), logical


@pytest.mark.parametrize("service", SERVICES)
def test_one_firehose_per_stream_into_the_archive_with_the_contract_layout(each: Synth, service: str) -> None:
    stage = STAGES[each.stage]
    streams = each.resources("AWS::KinesisFirehose::DeliveryStream", service)
    assert len(streams) == 1
    (stream,) = streams.values()
    props = stream["Properties"]
    assert props["DeliveryStreamType"] == "KinesisStreamAsSource"
    assert props["KinesisStreamSourceConfiguration"]["KinesisStreamARN"]["Fn::GetAtt"][0].startswith(
        "EventStream"
    )
    s3 = props["ExtendedS3DestinationConfiguration"]
    assert s3["Prefix"] == (
        f"events/service={service}/year=!{{timestamp:yyyy}}/month=!{{timestamp:MM}}/"
        "day=!{timestamp:dd}/hour=!{timestamp:HH}/"
    )
    assert s3["ErrorOutputPrefix"].startswith(f"errors/service={service}/")
    assert s3["CompressionFormat"] == "GZIP" and s3["FileExtension"] == ".gz"
    assert s3["BufferingHints"] == {
        "IntervalInSeconds": stage.firehose_buffer_seconds,
        "SizeInMBs": stage.firehose_buffer_mib,
    }
    assert "DynamicPartitioningConfiguration" not in s3
    assert f":s3:::eventstack-{each.stage}-archive-" in json.dumps(s3["BucketARN"])
    assert (
        _archive_bucket(each)["Properties"]["BucketName"]["Fn::Join"][1][0]
        == f"eventstack-{each.stage}-archive-"
    )


# --- monitoring ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_alarms_cover_mappings_functions_archive_and_api(each: Synth, service: str) -> None:
    template = each.template(service)
    resources = template["Resources"]
    alarms = [v["Properties"] for v in resources.values() if v["Type"] == "AWS::CloudWatch::Alarm"]
    assert all(a["AlarmActions"] for a in alarms)

    def alarmed(metric: str, dimension_value: Any) -> bool:
        return any(
            a["MetricName"] == metric and any(d["Value"] == dimension_value for d in a["Dimensions"])
            for a in alarms
        )

    functions = {k for k, v in resources.items() if v["Type"] == "AWS::Lambda::Function"}
    for fn in functions:
        assert alarmed("Errors", {"Ref": fn}) and alarmed("Throttles", {"Ref": fn}), fn
    for mapping in (v for v in resources.values() if v["Type"] == "AWS::Lambda::EventSourceMapping"):
        assert alarmed("IteratorAge", mapping["Properties"]["FunctionName"]), mapping
    delivery = f"eventstack-{each.stage}-{service}-archive"
    assert alarmed("DeliveryToS3.Success", delivery) and alarmed("DeliveryToS3.DataFreshness", delivery)
    assert alarmed("5XXError", f"eventstack-{each.stage}-{service}-api")
    assert sum(v["Type"] == "AWS::CloudWatch::Dashboard" for v in resources.values()) == 1
    dashboard = json.dumps(next(v for v in resources.values() if v["Type"] == "AWS::CloudWatch::Dashboard"))
    for counted in ("EventsPublished", "EventsApplied", "DuplicatesSkipped", "RecordsFailed",
                    "EventsAlreadyPublished", "PublishUnknownOutcomes", "BatchesRefused"):
        assert counted in dashboard, counted  # the handlers' own metrics (escore.observability)
