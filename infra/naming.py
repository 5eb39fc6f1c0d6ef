"""The CDK side of the naming rules: `escore.naming` with CloudFormation tokens and ARNs.

Every rule lives in `escore.naming` (pure, shared with the handlers, the local plan and the CLI);
this module only adds what needs a stack: the account and region tokens, and ARNs. A consumer
stack finds another service's stream (and the shared archive bucket) by these names rather than
through CloudFormation exports, so subscribing never pins or changes the producer's stack.
"""

from __future__ import annotations

from aws_cdk import Aws, Stack

from escore import naming
from escore.naming import (
    PROJECT,
    prefix,
    service_stack,
    shared_stack,
    table_generations,
    user_pool_arn_parameter,
)
from eventstack.topology import Service

__all__ = [
    "PROJECT", "alarm_topic", "alarm_topic_arn", "api", "archive_bucket", "delivery_stream", "function",
    "parameter_arn", "prefix", "queue", "service_stack", "shared_stack", "stream", "stream_arn", "table",
    "table_arn", "table_generations", "table_pointer", "user_pool_arn_parameter",
]


def table(stage: str, logical_name: str) -> str:
    return naming.physical(stage, logical_name)


def table_pointer(stage: str, logical_name: str) -> str:
    return naming.table_parameter(stage, logical_name)


def stream(stage: str, service: Service) -> str:
    return naming.physical(stage, service.stream_logical_name)


def function(stage: str, function_name: str) -> str:
    return naming.physical(stage, function_name)


def queue(stage: str, mapping: str) -> str:
    return naming.physical(stage, naming.dlq(mapping))


def delivery_stream(stage: str, service: str) -> str:
    return naming.physical(stage, naming.delivery_stream(service))


def api(stage: str, service: str) -> str:
    return naming.physical(stage, naming.api(service))


def alarm_topic(stage: str) -> str:
    return naming.physical(stage, naming.alarm_topic())


def archive_bucket(stage: str) -> str:
    """Globally unique through account and region (tokens resolved at deploy time)."""
    return naming.archive_bucket(stage, Aws.ACCOUNT_ID, Aws.REGION)


def stream_arn(scope: Stack, stage: str, service: Service) -> str:
    return scope.format_arn(service="kinesis", resource="stream", resource_name=stream(stage, service))


def table_arn(scope: Stack, table_name: str) -> str:
    return scope.format_arn(service="dynamodb", resource="table", resource_name=table_name)


def parameter_arn(scope: Stack, parameter_name: str) -> str:
    """ARN of an SSM parameter whose name starts with '/' (the ARN holds it without that slash)."""
    return scope.format_arn(service="ssm", resource="parameter", resource_name=parameter_name.lstrip("/"))


def alarm_topic_arn(scope: Stack, stage: str) -> str:
    return scope.format_arn(service="sns", resource=alarm_topic(stage))
