"""cdk-nag gates (AwsSolutions and Serverless packs) and EVERY acknowledged finding, with its reason.

Acknowledgments are attached to the narrowest construct they concern (found by type), never to
a whole stack, so a new resource of another kind is still checked.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, App, Validations
from cdk_nag import AwsSolutionsChecks, ServerlessChecks
from constructs import IConstruct

from infra import naming
from infra.api import ApiGatewayAccount, ServiceApi
from infra.archive import ArchiveDelivery
from infra.auth import UserPool
from infra.dead_letters import FailureQueue
from infra.functions import ServiceFunction
from infra.monitoring import AlarmTopic

FUNCTION_ACKS = {
    "AwsSolutions::AwsSolutions-IAM5[Resource::*]": (
        "Only xray:PutTraceSegments, xray:PutTelemetryRecords (X-Ray tracing) and dynamodb:ListStreams "
        "(DynamoDB stream mapping) are granted on '*': none of them supports resource-level permissions. "
        "Every other action of the role names its resource."
    ),
    "Serverless::Serverless-LambdaDLQ": (
        "No function here is invoked asynchronously: the API function is invoked synchronously by API "
        "Gateway, the others by event source mappings, whose failures go to the mapping's on-failure queue."
    ),
}
FAILURE_QUEUE_ACKS = {
    "AwsSolutions::AwsSolutions-SQS3": (
        "This queue IS the dead-letter destination (on-failure destination of an event source mapping); "
        "nothing consumes it automatically, it is alarmed on and redriven by `eventstack dlq redrive`."
    ),
    "Serverless::Serverless-SQSRedrivePolicy": (
        "This queue IS the dead-letter destination of an event source mapping; a redrive policy would "
        "only move its messages to yet another queue."
    ),
}
DELIVERY_ACKS = {
    "AwsSolutions::AwsSolutions-KDF1": (
        "A delivery stream whose source is a Kinesis stream cannot take Firehose server-side encryption; "
        "the data is encrypted at rest in the source stream (KMS) and in the archive bucket (SSE-S3), "
        "and in transit with TLS."
    ),
}
API_GATEWAY_ACCOUNT_ACKS = {
    "AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
    "AmazonAPIGatewayPushToCloudWatchLogs]": (
        "The region's API Gateway logging role, assumed only by apigateway.amazonaws.com; AWS maintains "
        "the exact log actions that API Gateway execution and access logging need."
    ),
}
API_ACKS = {
    "AwsSolutions::AwsSolutions-APIG3": (
        "No WAF web ACL: every method requires IAM (SigV4) or Cognito authorization and the stage is "
        "throttled; a web ACL costs about $5/month plus $1 per rule and per million requests. Add one in "
        "front when the API is exposed to anonymous clients."
    ),
}
IAM_AUTH_API_ACKS = {
    "AwsSolutions::AwsSolutions-COG4": (
        "Authorization is AWS IAM (SigV4) by default (stage option auth=iam): callers are AWS principals "
        "(services, operators), not end users. `-c auth=cognito` switches every method to a Cognito "
        "user pool authorizer."
    ),
}
USER_POOL_ACKS = {
    "AwsSolutions::AwsSolutions-COG8": (
        "The Plus feature plan (threat protection) is billed per monthly active user; the pool is an "
        "option for operator/partner sign-in with MFA required and self sign-up off. Move to Plus when "
        "end users sign in."
    ),
}
ALARM_TOPIC_ACKS = {
    "Serverless::Serverless-SNSRedrivePolicy": (
        "Only the optional e-mail subscription (-c alarm_email=...) exists; SNS retries e-mail delivery "
        "itself and a dead-letter queue of unsent alarm e-mails would have no reader. The alarms stay "
        "visible on the dashboards."
    ),
}


def _archive_object_acks(delivery: ArchiveDelivery) -> dict[str, str]:
    bucket = f"arn:<AWS::Partition>:s3:::{naming.prefix(delivery.stage_name)}-archive-<AWS::AccountId>-<AWS::Region>"
    reason = (
        "Firehose writes objects whose names it generates (timestamp partitions, stream name, random "
        "suffix), so object ARNs end in '*'; the grant is confined to this service's own prefix."
    )
    return {
        f"AwsSolutions::AwsSolutions-IAM5[Resource::{bucket}/{delivery.data_root}*]": reason,
        f"AwsSolutions::AwsSolutions-IAM5[Resource::{bucket}/{delivery.error_root}*]": reason,
    }


def _table_generation_acks(function: ServiceFunction) -> dict[str, str]:
    """One finding per `<table>-g*` pattern this very function was granted (infra/tables.py)."""
    reason = (
        "`eventstack replay --into new` builds a projection's next table outside CloudFormation, named "
        "`<deployed table>-g<UTC timestamp>`, and switches the projection's SSM pointer to it; the projector "
        "and its API must reach whichever generation is active, so the grant names that projection's own "
        "`-g*` prefix (its explicit actions only), never other tables."
    )
    return {
        f"AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:dynamodb:<AWS::Region>:"
        f"<AWS::AccountId>:table/{pattern}]": reason
        for pattern in function.table_generations
    }


def acknowledgments(construct: IConstruct) -> dict[str, str]:
    """The acknowledged finding ids (with reasons) for one construct of ours; empty for others."""
    if isinstance(construct, ServiceFunction):
        return {**FUNCTION_ACKS, **_table_generation_acks(construct)}
    if isinstance(construct, FailureQueue):
        return FAILURE_QUEUE_ACKS
    if isinstance(construct, ArchiveDelivery):
        return {**DELIVERY_ACKS, **_archive_object_acks(construct)}
    if isinstance(construct, ApiGatewayAccount):
        return API_GATEWAY_ACCOUNT_ACKS
    if isinstance(construct, ServiceApi):
        return {**API_ACKS, **(IAM_AUTH_API_ACKS if construct.authorization == "iam" else {})}
    if isinstance(construct, UserPool):
        return USER_POOL_ACKS
    if isinstance(construct, AlarmTopic):
        return ALARM_TOPIC_ACKS
    return {}


def check(app: App) -> None:
    """Register both packs on the app and attach every acknowledgment; synth fails on the rest."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app), ServerlessChecks(app))
    for construct in app.node.find_all():
        for rule, reason in acknowledgments(construct).items():
            Validations.of(construct).acknowledge(Acknowledgment(id=rule, reason=reason))
