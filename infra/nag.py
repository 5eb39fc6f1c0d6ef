"""cdk-nag gates (AwsSolutions and Serverless packs) and EVERY acknowledged finding, with its reason.

Acknowledgments are attached to the narrowest construct they concern (found by type), never to
a whole stack, so a new resource of another kind is still checked.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, App, CfnElement, Stack, Validations
from cdk_nag import AwsSolutionsChecks, ServerlessChecks
from constructs import IConstruct

from infra import naming
from infra.api import ApiGatewayAccount, ServiceApi
from infra.archive import ArchiveDelivery
from infra.audit import PLANS_PREFIX, RESULTS_PREFIX, AuditLog
from infra.auth import UserPool
from infra.dead_letters import FailureQueue
from infra.functions import ServiceFunction
from infra.monitoring import AlarmTopic
from infra.replay import ReplayMachine

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
        "`<deployed table>-g<UTC timestamp>`, and switches the projection's SSM pointer to it; the projector, "
        "its API and the replay worker (which folds into the generation being built) must reach whichever "
        "generation is meant, so the grant names that projection's own `-g*` prefix (its explicit actions "
        "only), never other tables."
    )
    return {
        f"AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:dynamodb:<AWS::Region>:"
        f"<AWS::AccountId>:table/{pattern}]": reason
        for pattern in function.table_generations
    }


STATE_MACHINE_ACKS = {
    "AwsSolutions::AwsSolutions-IAM5[Resource::*]": (
        "The replay state machine's role gets xray:PutTraceSegments/PutTelemetryRecords/GetSampling* (X-Ray "
        "tracing) and the logs:*LogDelivery/DescribeLogGroups/DescribeResourcePolicies actions of vended "
        "CloudWatch Logs delivery on '*': none of them supports resource-level permissions."
    ),
}


def _logical_id(construct: IConstruct) -> str:
    """The CloudFormation logical id of a construct's default resource, as cdk-nag prints it."""
    element = construct.node.default_child
    assert isinstance(element, CfnElement)
    return str(Stack.of(construct).resolve(Stack.of(construct).get_logical_id(element)))


def _audit_acks(audit: AuditLog) -> dict[str, str]:
    """The reader policy's two object prefixes (their keys are Firehose's and Athena's, not known ahead)."""
    archive, results = _logical_id(audit.archive_bucket), _logical_id(audit.results_bucket)
    return {
        f"AwsSolutions::AwsSolutions-IAM5[Resource::<{archive}.Arn>/{audit.archive_prefix}*]": (
            "An audit reader reads every archived object, whose keys Firehose generates (service and hour "
            "partitions, stream name, random suffix): GetObject on the archive's events/ prefix only, "
            "never errors/ or anything else in the bucket."
        ),
        f"AwsSolutions::AwsSolutions-IAM5[Resource::<{results}.Arn>/{RESULTS_PREFIX}*]": (
            "Athena names each query's result objects by query id: the reader writes and reads them under "
            "the workgroup's results/ prefix only (the workgroup enforces that location)."
        ),
    }


def _replay_acks(machine: ReplayMachine) -> dict[str, str]:
    """The replay machine's object and child-execution patterns (infra/replay.py)."""
    plans, worker = _logical_id(machine.plans_bucket), _logical_id(machine.worker.function)
    machine_ref = _logical_id(machine.state_machine)
    execution = (
        "arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:"
        f'{{"Fn::Select":[6,{{"Fn::Split":[":",{{"Ref":"{machine_ref}"}}]}}]}}'
    )
    child_reason = (
        "CDK's Distributed Map grant: the machine describes and stops its own child executions, whose "
        "names Step Functions generates under this state machine's (and its Map Run's) execution ARN."
    )
    states = "arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>"
    name = machine.state_machine_name
    operator_reason = (
        "The replay operator watches the executions it starts of this one state machine, their Map Runs and "
        "their child executions, whose names Step Functions generates under the machine's name: describe and "
        "list only, no start or stop of anything but this machine."
    )
    return {
        **STATE_MACHINE_ACKS,
        f"AwsSolutions::AwsSolutions-IAM5[Resource::<{plans}.Arn>/{PLANS_PREFIX}*]": (
            "The plan files Athena UNLOAD writes (their names Athena generates) under the replay-plans/ prefix "
            "of the audit results bucket: the worker reads them (GetObject only), the replay operator writes "
            "them through UNLOAD and writes the manifest; nothing else in the bucket."
        ),
        f"AwsSolutions::AwsSolutions-IAM5[Resource::{states}:execution:{name}:*]": operator_reason,
        f"AwsSolutions::AwsSolutions-IAM5[Resource::{states}:execution:{name}/*]": operator_reason,
        f"AwsSolutions::AwsSolutions-IAM5[Resource::{states}:mapRun:{name}/*]": operator_reason,
        f"AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::<{plans}>/*]": (
            "CDK's Distributed Map grants: the ItemReader reads each run's manifest.json and the ResultWriter "
            "writes each run's results, both under keys given per execution; CDK grants s3:GetObject and "
            "s3:PutObject (with multipart) on the audit results bucket's objects, which holds only Athena "
            "results and replay plans (expiring), and on no other bucket."
        ),
        f"AwsSolutions::AwsSolutions-IAM5[Resource::<{worker}.Arn>:*]": (
            "CDK's LambdaInvoke grant: lambda:InvokeFunction on the worker and its versions/aliases "
            "(<function arn>:*), that one function only."
        ),
        f"AwsSolutions::AwsSolutions-IAM5[Resource::{execution}:*]": child_reason,
        f"AwsSolutions::AwsSolutions-IAM5[Resource::{execution}/FoldEveryFile:*]": child_reason,
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
    if isinstance(construct, AuditLog):
        return _audit_acks(construct)
    if isinstance(construct, ReplayMachine):
        return _replay_acks(construct)
    return {}


def check(app: App) -> None:
    """Register both packs on the app and attach every acknowledgment; synth fails on the rest."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app), ServerlessChecks(app))
    for construct in app.node.find_all():
        for rule, reason in acknowledgments(construct).items():
            Validations.of(construct).acknowledge(Acknowledgment(id=rule, reason=reason))
