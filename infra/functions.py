"""The one way a Lambda function is made here: arm64, the newest Python runtime, its own role,
its own log group, JSON logs, X-Ray, and the Powertools settings of the stage.

Packaged as the stage says (`-c packaging=zip|image`): from the one zip asset of lambdas/ (the
default), or as a `DockerImageFunction` from the one container image of the same code."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra import naming
from infra.bundling import RUNTIME, image_code
from infra.stages import StageSettings

POWERTOOLS_METRICS_NAMESPACE = "eventstack"


@dataclass(frozen=True)
class FunctionSpec:
    name: str  # the topology's function name, e.g. "posts-api"
    handler: str  # "module.handler", relative to lambdas/
    service: str
    description: str
    environment: Mapping[str, str] = field(default_factory=dict)
    memory_mb: int = 256
    timeout_seconds: int = 60


_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
}


def retention(days: int) -> logs.RetentionDays:
    if days not in _RETENTION:
        raise ValueError(f"log retention of {days} days: choose one of {sorted(_RETENTION)}")
    return _RETENTION[days]


class ServiceFunction(Construct):
    """A function with a role that starts empty but for writing its own logs."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageSettings,
        spec: FunctionSpec,
        code: lambda_.Code | None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.spec = spec
        # `<table>-g*` patterns this function's role may use (replay generations); for infra/nag.py.
        self.table_generations: list[str] = []
        physical_name = naming.function(stage.name, spec.name)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/lambda/{physical_name}",
            retention=retention(stage.log_retention_days),
            removal_policy=RemovalPolicy.RETAIN if stage.retain_data else RemovalPolicy.DESTROY,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{physical_name}: explicit actions on explicit resources only",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        packaged: dict[str, object]
        if stage.packaging == "image":
            packaged = {"code": image_code(spec.handler)}
        else:
            if code is None:
                raise ValueError(f"{spec.name}: zip packaging needs the code asset (infra.bundling.lambda_code)")
            packaged = {"code": code, "runtime": RUNTIME, "handler": spec.handler}
        function_type = lambda_.DockerImageFunction if stage.packaging == "image" else lambda_.Function
        self.function: lambda_.Function = function_type(
            self,
            "Function",
            function_name=physical_name,
            description=spec.description,
            architecture=lambda_.Architecture.ARM_64,
            **packaged,  # type: ignore[arg-type]
            role=self.role,
            memory_size=spec.memory_mb,
            timeout=Duration.seconds(spec.timeout_seconds),
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel[stage.log_level],
            system_log_level_v2=lambda_.SystemLogLevel[stage.system_log_level],
            environment={
                "STAGE": stage.name,
                "POWERTOOLS_SERVICE_NAME": spec.service,
                "POWERTOOLS_METRICS_NAMESPACE": POWERTOOLS_METRICS_NAMESPACE,
                "POWERTOOLS_LOG_LEVEL": stage.log_level,
                "POWERTOOLS_LOGGER_LOG_EVENT": "false",  # events carry user data
                "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
                "POWERTOOLS_DEV": "false",
                **spec.environment,
            },
        )
