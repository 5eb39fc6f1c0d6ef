"""What every service uses and no service owns: the archive bucket (and its log bucket), the
alarm topic, the region's API Gateway logging role, and the optional Cognito user pool."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra.api import ApiGatewayAccount
from infra.archive import ArchiveBucket
from infra.auth import UserPool
from infra.monitoring import AlarmTopic
from infra.stages import StageSettings


class SharedStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, stage: StageSettings, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.archive = ArchiveBucket(self, "Archive", stage=stage)
        self.alarms = AlarmTopic(self, "Alarms", stage=stage)
        self.api_gateway_account = ApiGatewayAccount(self, "ApiGatewayAccount")
        self.user_pool = UserPool(self, "Users", stage=stage) if stage.auth == "cognito" else None
        CfnOutput(self, "ArchiveBucketName", value=self.archive.bucket.bucket_name)
        CfnOutput(self, "AlarmTopicArn", value=self.alarms.topic.topic_arn)
