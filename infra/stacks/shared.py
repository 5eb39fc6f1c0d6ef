"""What every service uses and no service owns: the archive bucket (and its log bucket), the
alarm topic, the region's API Gateway logging role, the optional Cognito user pool, and the archive's
audit log and replay machinery (Glue tables, Athena workgroup, the replay state machine and worker).

The audit log and the replay machine read the topology (the services' names for the tables'
partition projection, the projections' tables for the worker's grants), so adding a service
changes this stack too, by those lists only (docs/deploy.md)."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from eventstack.topology import TOPOLOGY, Topology
from infra.api import ApiGatewayAccount
from infra.archive import ArchiveBucket
from infra.audit import AuditLog
from infra.auth import UserPool
from infra.bundling import lambda_code
from infra.monitoring import AlarmTopic
from infra.replay import ReplayMachine
from infra.stages import StageSettings


class SharedStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageSettings,
        topology: Topology = TOPOLOGY,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.archive = ArchiveBucket(self, "Archive", stage=stage)
        self.alarms = AlarmTopic(self, "Alarms", stage=stage)
        self.api_gateway_account = ApiGatewayAccount(self, "ApiGatewayAccount")
        self.user_pool = UserPool(self, "Users", stage=stage) if stage.auth == "cognito" else None
        self.audit = AuditLog(
            self,
            "Audit",
            stage=stage,
            topology=topology,
            archive=self.archive.bucket,
            access_logs=self.archive.access_logs,
        )
        code = lambda_code(with_dependencies=stage.bundle_dependencies) if stage.packaging == "zip" else None
        self.replay = ReplayMachine(
            self, "Replay", stage=stage, topology=topology, plans=self.audit.results_bucket, code=code
        )
        CfnOutput(self, "ArchiveBucketName", value=self.archive.bucket.bucket_name)
        CfnOutput(self, "AlarmTopicArn", value=self.alarms.topic.topic_arn)
        CfnOutput(self, "AuditResultsBucketName", value=self.audit.results_bucket.bucket_name)
        CfnOutput(self, "AuditWorkGroup", value=self.audit.workgroup_name)
        CfnOutput(self, "ReplayStateMachineArn", value=self.replay.state_machine.state_machine_arn)
