"""A DynamoDB table exactly as the topology declares it (keys, stream, TTL), secured alike."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from eventstack.topology import Table
from infra import naming
from infra.stages import StageSettings

_TYPES = {"S": dynamodb.AttributeType.STRING, "N": dynamodb.AttributeType.NUMBER}


def _attribute(key: tuple[str, str]) -> dynamodb.Attribute:
    name, kind = key
    return dynamodb.Attribute(name=name, type=_TYPES[kind])


def topology_table(scope: Construct, construct_id: str, stage: StageSettings, table: Table) -> dynamodb.Table:
    return dynamodb.Table(
        scope,
        construct_id,
        table_name=naming.table(stage.name, table.logical_name),
        partition_key=_attribute(table.partition_key),
        sort_key=_attribute(table.sort_key) if table.sort_key else None,
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        stream=dynamodb.StreamViewType.NEW_IMAGE if table.stream else None,
        time_to_live_attribute=table.ttl_attribute,
        deletion_protection=stage.deletion_protection,
        removal_policy=RemovalPolicy.RETAIN if stage.retain_data else RemovalPolicy.DESTROY,
    )
