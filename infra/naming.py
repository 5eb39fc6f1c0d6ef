"""Deterministic physical names, derived from stage + topology.

A consumer stack finds another service's stream (and the shared archive bucket) by these names
rather than through CloudFormation exports, so subscribing never pins or changes the producer's
stack. The CLI can derive the same names to find resources of a deployed stage.
"""

from __future__ import annotations

from aws_cdk import Aws, Stack

from eventstack.topology import Service

PROJECT = "eventstack"


def prefix(stage: str) -> str:
    return f"{PROJECT}-{stage}"


def shared_stack(stage: str) -> str:
    return f"{prefix(stage)}-shared"


def service_stack(stage: str, service: str) -> str:
    return f"{prefix(stage)}-{service}"


def table(stage: str, logical_name: str) -> str:
    return f"{prefix(stage)}-{logical_name}"


def table_generations(stage: str, logical_name: str) -> str:
    """Every table `eventstack replay --into new` builds for a projection: `<table>-g<UTC timestamp>`."""
    return f"{table(stage, logical_name)}-g*"


def table_pointer(stage: str, logical_name: str) -> str:
    """A projection's active-table pointer (SSM parameter), as `escore.tables.table_parameter_name`."""
    return f"/{PROJECT}/{stage}/projections/{logical_name}/table"


def stream(stage: str, service: Service) -> str:
    return f"{prefix(stage)}-{service.stream_logical_name}"


def function(stage: str, function_name: str) -> str:
    return f"{prefix(stage)}-{function_name}"


def queue(stage: str, name: str) -> str:
    return f"{prefix(stage)}-{name}-dlq"


def delivery_stream(stage: str, service: str) -> str:
    return f"{prefix(stage)}-{service}-archive"


def api(stage: str, service: str) -> str:
    return f"{prefix(stage)}-{service}-api"


def alarm_topic(stage: str) -> str:
    return f"{prefix(stage)}-alarms"


def archive_bucket(stage: str) -> str:
    """Globally unique through account and region (tokens resolved at deploy time)."""
    return f"{prefix(stage)}-archive-{Aws.ACCOUNT_ID}-{Aws.REGION}"


def user_pool_arn_parameter(stage: str) -> str:
    """SSM parameter holding the shared Cognito user pool's ARN (only with auth=cognito)."""
    return f"/{PROJECT}/{stage}/auth/user-pool-arn"


def stream_arn(scope: Stack, stage: str, service: Service) -> str:
    return scope.format_arn(service="kinesis", resource="stream", resource_name=stream(stage, service))


def table_arn(scope: Stack, table_name: str) -> str:
    return scope.format_arn(service="dynamodb", resource="table", resource_name=table_name)


def parameter_arn(scope: Stack, parameter_name: str) -> str:
    """ARN of an SSM parameter whose name starts with '/' (the ARN holds it without that slash)."""
    return scope.format_arn(service="ssm", resource="parameter", resource_name=parameter_name.lstrip("/"))


def alarm_topic_arn(scope: Stack, stage: str) -> str:
    return scope.format_arn(service="sns", resource=alarm_topic(stage))
