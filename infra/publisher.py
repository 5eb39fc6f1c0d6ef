"""The publisher: relays the event store's change stream to the service's Kinesis stream, in order."""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from constructs import Construct

from escore.settings import PublisherSettings
from eventstack.topology import Service
from infra import mappings
from infra.dead_letters import FailureQueue
from infra.functions import FunctionSpec, ServiceFunction
from infra.stages import StageSettings

MARK_PREFIX = "$publish#"  # the publisher's attempt marks' stream_id prefix (lambdas/publisher/marks.py)


class Publisher(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageSettings,
        service: Service,
        event_store: dynamodb.Table,
        stream: kinesis.Stream,
        code: lambda_.Code | None,
    ) -> None:
        super().__init__(scope, construct_id)
        name = service.publisher_function_name
        self.function = ServiceFunction(
            self,
            "Function",
            stage=stage,
            code=code,
            spec=FunctionSpec(
                name=name,
                handler=service.publisher_handler,
                service=service.name,
                description=f"Relays {service.name}'s event store stream to Kinesis",
                environment=PublisherSettings.environment(service.name, event_store.table_name, stream.stream_name),
            ),
        )
        stream.grant_write(self.function.function)
        # Each event once (lambdas/publisher): the batch's attempt mark in its own event store, and
        # reading its own stream back after a crash, a retry or a PutRecords of unknown outcome.
        # PutItem only of its own marks' keys (lambdas/publisher/marks.py: MARK_PREFIX), never of events.
        self.function.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["dynamodb:PutItem"],
                resources=[event_store.table_arn],
                conditions={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{MARK_PREFIX}*"]}},
            )
        )
        stream.grant(self.function.function, "kinesis:ListShards", "kinesis:GetShardIterator", "kinesis:GetRecords")
        self.failure_queue = FailureQueue(self, "OnFailure", stage=stage, mapping_name=name)
        self.source = sources.DynamoEventSource(
            event_store, **mappings.options(service.publisher_mapping, self.failure_queue)
        )
        self.function.function.add_event_source(self.source)
        self.mapping = mappings.Mapping(name, service.name, self.function, self.failure_queue)
