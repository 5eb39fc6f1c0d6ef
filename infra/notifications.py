"""A projection's notification topic: the SNS topic its effects publish to (docs/notifications.md).

Encrypted at rest under the AWS managed key of SNS (`alias/aws/sns`: a Lambda role of the same
account publishes through it without a key grant; only CloudWatch alarms need a customer managed
key, see the alarm topic) and TLS only. The projector function alone may publish, to this topic
alone (`sns:Publish` on its ARN), and finds it in its environment (escore.settings.NotifierSettings).
"""

from __future__ import annotations

from aws_cdk import CfnOutput
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from escore import naming
from escore.settings import NotifierSettings
from eventstack.topology import Projection
from infra.functions import ServiceFunction
from infra.stages import StageSettings

SNS_MANAGED_KEY = "alias/aws/sns"


class NotificationTopic(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, stage: StageSettings, projection: Projection,
                 publisher: ServiceFunction) -> None:
        super().__init__(scope, construct_id)
        if projection.topic is None:
            raise ValueError(f"projection {projection.name} does not notify")
        self.topic = sns.Topic(
            self,
            "Topic",
            topic_name=naming.physical(stage.name, projection.topic),
            master_key=kms.Alias.from_alias_name(self, "Key", SNS_MANAGED_KEY),
            enforce_ssl=True,
        )
        # Publish on this topic's ARN only; no key grant (the AWS managed key's policy lets the account's
        # principals use it through SNS). `grant_publish` would add KMS actions on the alias.
        publisher.function.add_to_role_policy(iam.PolicyStatement(actions=["sns:Publish"], resources=[self.topic.topic_arn]))
        for name, value in NotifierSettings.environment(self.topic.topic_arn).items():
            publisher.function.add_environment(name, value)
        CfnOutput(self, "TopicArn", value=self.topic.topic_arn)
