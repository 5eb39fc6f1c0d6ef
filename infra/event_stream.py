"""A service's Kinesis stream: what its publisher writes and every subscriber reads.

Encrypted with the AWS managed key `alias/aws/kinesis`: subscribers in other stacks need no key
grant (the managed key serves every principal of the account through Kinesis), so a new
subscription never touches the producer's stack. `lookup` finds another service's stream by its
deterministic name instead of a CloudFormation export.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_kinesis as kinesis
from constructs import Construct

from eventstack.topology import Service
from infra import naming
from infra.stages import StageSettings


class EventStream(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, stage: StageSettings, service: Service
    ) -> None:
        super().__init__(scope, construct_id)
        provisioned = stage.stream_mode == "provisioned"
        self.stream = kinesis.Stream(
            self,
            "Stream",
            stream_name=naming.stream(stage.name, service),
            stream_mode=kinesis.StreamMode.PROVISIONED if provisioned else kinesis.StreamMode.ON_DEMAND,
            shard_count=stage.stream_shards if provisioned else None,
            retention_period=Duration.hours(stage.stream_retention_hours),
            encryption=kinesis.StreamEncryption.MANAGED,
            removal_policy=RemovalPolicy.RETAIN if stage.retain_data else RemovalPolicy.DESTROY,
        )

    @staticmethod
    def lookup(
        scope: Construct, construct_id: str, *, stage: StageSettings, service: Service
    ) -> kinesis.IStream:
        arn = naming.stream_arn(Stack.of(scope), stage.name, service)
        return kinesis.Stream.from_stream_arn(scope, construct_id, arn)
