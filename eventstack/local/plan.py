"""What the local runtime creates, derived from the topology and nothing else.

A pure description (no boto3, no moto): the emulation creates these resources, the function
pool builds these functions, the pollers drive these mappings, and a test compares the plan
with the CDK templates. Physical names locally are the topology's logical names, so the
AWS CLI examples in docs/local.md read the way the topology does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from escore import naming
from escore.settings import (
    ApiSettings,
    NotifierSettings,
    ProjectionTable,
    ProjectorSettings,
    PublisherSettings,
)
from eventstack.topology import TOPOLOGY, MappingSettings, Table, Topology

STAGE = naming.LOCAL_STAGE
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
ARCHIVE_BUCKET = naming.local_archive_bucket()
LOCAL_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/eventstack-local"


@dataclass(frozen=True)
class FunctionPlan:
    name: str  # Lambda function name, e.g. "posts-api", "user_profiles-projector"
    handler: str  # "module.attribute", relative to lambdas/
    env: dict[str, str] = field(hash=False)

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.name}"


@dataclass(frozen=True)
class MappingPlan:
    """One event source mapping: a source (DynamoDB stream or Kinesis stream) feeding a function."""

    name: str  # e.g. "posts-publisher", "user_profiles-from-posts"
    function: str
    source_kind: str  # "dynamodb" | "kinesis"
    source: str  # table name (dynamodb) or stream name (kinesis)
    settings: MappingSettings
    dlq: str  # SQS queue name of the on-failure destination

    @property
    def source_label(self) -> str:
        return f"{self.source_kind}:{self.source}"


@dataclass(frozen=True)
class DeliveryPlan:
    """One Firehose delivery stream: a service's Kinesis stream to the archive bucket."""

    name: str
    service: str
    stream: str


@dataclass(frozen=True)
class LocalPlan:
    tables: tuple[Table, ...]
    table_names: dict[str, str]  # logical -> physical
    streams: dict[str, str]  # service -> Kinesis stream name
    functions: tuple[FunctionPlan, ...]
    mappings: tuple[MappingPlan, ...]
    deliveries: tuple[DeliveryPlan, ...]
    archive_bucket: str
    archive_prefix: str
    archive_error_prefix: str
    routes: dict[tuple[str, str], str]  # (method, resource) -> API function name

    def function(self, name: str) -> FunctionPlan:
        for function in self.functions:
            if function.name == name:
                return function
        raise KeyError(name)


def powertools_env(service: str) -> dict[str, str]:
    return {
        "POWERTOOLS_SERVICE_NAME": service,
        "POWERTOOLS_METRICS_NAMESPACE": "eventstack",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }


def projection_env(name: str, table: str) -> dict[str, str]:
    """The projection's table, and its active-table pointer (escore.tables; replay --into new switches it)."""
    return ProjectionTable.environment(name, table, naming.table_parameter(STAGE, name))


def build_plan(topology: Topology = TOPOLOGY, archive_bucket: str = ARCHIVE_BUCKET) -> LocalPlan:
    tables: list[Table] = []
    functions: list[FunctionPlan] = []
    mappings: list[MappingPlan] = []
    deliveries: list[DeliveryPlan] = []
    streams: dict[str, str] = {}
    routes: dict[tuple[str, str], str] = {}

    for service in topology.services:
        store = service.event_store
        tables.append(store)
        stream = service.stream_logical_name
        streams[service.name] = stream
        projections_env: dict[str, str] = {}
        for p in service.projections:
            projections_env.update(projection_env(p.name, p.table.logical_name))
        functions.append(
            FunctionPlan(
                service.api_function_name,
                service.api_handler,
                {
                    **ApiSettings.environment(service.name, store.logical_name),
                    **projections_env,
                    **powertools_env(service.name),
                },
            )
        )
        for route in service.routes:
            routes[(route.method, route.resource)] = service.api_function_name
        functions.append(
            FunctionPlan(
                service.publisher_function_name,
                service.publisher_handler,
                {
                    **PublisherSettings.environment(service.name, store.logical_name, stream),
                    **powertools_env(service.name),
                },
            )
        )
        mappings.append(
            MappingPlan(
                name=service.publisher_function_name,
                function=service.publisher_function_name,
                source_kind="dynamodb",
                source=store.logical_name,
                settings=service.publisher_mapping,
                dlq=naming.dlq(service.publisher_function_name),
            )
        )
        deliveries.append(DeliveryPlan(naming.delivery_stream(service.name), service.name, stream))

    for service, projection in topology.projections:
        tables.append(projection.table)
        functions.append(
            FunctionPlan(
                projection.function_name,
                projection.handler,
                {
                    **ProjectorSettings.environment(service.name, projection.folds),
                    **projection_env(projection.name, projection.table.logical_name),
                    # Locally a projection's notifications are lines of the runtime's log (no SNS topic).
                    **(NotifierSettings.environment(None) if projection.notifies else {}),
                    **powertools_env(service.name),
                },
            )
        )
    for subscription in topology.subscriptions:
        projection = subscription.projection
        mappings.append(
            MappingPlan(
                name=subscription.name,
                function=projection.function_name,
                source_kind="kinesis",
                source=streams[subscription.source],
                settings=projection.mapping,
                dlq=naming.dlq(subscription.name),
            )
        )

    return LocalPlan(
        tables=tuple(tables),
        table_names={t.logical_name: t.logical_name for t in tables},
        streams=streams,
        functions=tuple(functions),
        mappings=tuple(mappings),
        deliveries=tuple(deliveries),
        archive_bucket=archive_bucket,
        archive_prefix=topology.archive_prefix,
        archive_error_prefix=topology.archive_error_prefix,
        routes=routes,
    )
