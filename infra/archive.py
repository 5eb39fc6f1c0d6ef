"""The archive (docs/api.md, "The archive"): one Object-Locked bucket for all services, and per service one
Firehose delivery stream from its Kinesis stream into it.

The bucket is shared and lives in the shared stack; each delivery stream lives with the service
that owns the stream it reads (see docs/decisions.md): adding a service never changes the shared
stack, and a service stack only needs the bucket's deterministic name.

Keys: events/service=<svc>/year=!{timestamp:yyyy}/.../hour=!{timestamp:HH}/ -- Firehose's
timestamp namespaces (arrival time), no per-record dynamic partitioning (which is billed per GB
and per partition). Records are already newline-terminated JSON, so a GZIP object is JSON Lines.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from eventstack.topology import Topology
from infra import naming
from infra.functions import retention
from infra.stages import StageSettings

_HOUR_PARTITIONS = "year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/hour=!{timestamp:HH}/"


def data_prefix(topology: Topology, service: str) -> str:
    return f"{topology.archive_prefix}service={service}/{_HOUR_PARTITIONS}"


def error_prefix(topology: Topology, service: str) -> str:
    # Firehose requires the error-output-type namespace once the data prefix uses expressions.
    return (
        f"{topology.archive_error_prefix}service={service}/!{{firehose:error-output-type}}/{_HOUR_PARTITIONS}"
    )


def bucket_arn(stage: StageSettings) -> str:
    return f"arn:{Aws.PARTITION}:s3:::{naming.archive_bucket(stage.name)}"


class ArchiveBucket(Construct):
    """Versioned, Object Lock, no public access, TLS only, encrypted, access-logged, tiered."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageSettings) -> None:
        super().__init__(scope, construct_id)
        # Object Lock buckets cannot receive server access logs, hence a plain log bucket.
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # log delivery supports SSE-S3 only
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=Duration.days(stage.access_log_expiration_days),
                    noncurrent_version_expiration=Duration.days(1),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        lifecycle = [
            s3.LifecycleRule(
                id="tier-events",
                # Glacier Instant Retrieval keeps replay a plain GET; no restore step.
                transitions=[
                    s3.Transition(
                        storage_class=s3.StorageClass.INFREQUENT_ACCESS, transition_after=Duration.days(30)
                    ),
                    s3.Transition(
                        storage_class=s3.StorageClass.GLACIER_INSTANT_RETRIEVAL,
                        transition_after=Duration.days(90),
                    ),
                ],
                # Tiny objects cost more in IA/Glacier IR than in Standard (128 KiB minimum).
                object_size_greater_than=128 * 1024,
            ),
            s3.LifecycleRule(
                id="expire",
                expiration=Duration.days(stage.archive_expiration_days)
                if stage.archive_expiration_days
                else None,
                noncurrent_version_expiration=Duration.days(30),
                abort_incomplete_multipart_upload_after=Duration.days(7),
            ),
        ]
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=naming.archive_bucket(stage.name),
            versioned=True,
            object_lock_enabled=True,
            object_lock_default_retention=(
                s3.ObjectLockRetention.compliance(Duration.days(stage.object_lock_days))
                if stage.object_lock_mode == "compliance"
                else s3.ObjectLockRetention.governance(Duration.days(stage.object_lock_days))
            ),
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="archive/",
            lifecycle_rules=lifecycle,
            removal_policy=RemovalPolicy.RETAIN,  # Object Lock: it could not be emptied anyway
        )
        # CloudFormation types ObjectSizeGreaterThan as a string; CDK renders a number (W9003).
        cfn_bucket = self.bucket.node.default_child
        assert isinstance(cfn_bucket, s3.CfnBucket)
        cfn_bucket.add_property_override(
            "LifecycleConfiguration.Rules.0.ObjectSizeGreaterThan", str(128 * 1024)
        )


class ArchiveDelivery(Construct):
    """Firehose: the service's Kinesis stream -> the shared archive bucket (GZIP, stage buffering)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageSettings,
        topology: Topology,
        service: str,
        stream: kinesis.IStream,
    ) -> None:
        super().__init__(scope, construct_id)
        self.delivery_stream_name = naming.delivery_stream(stage.name, service)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=retention(stage.log_retention_days),
            removal_policy=RemovalPolicy.RETAIN if stage.retain_data else RemovalPolicy.DESTROY,
        )
        self.log_stream = logs.LogStream(self, "S3Delivery", log_group=self.log_group)
        archive = bucket_arn(stage)
        data = data_prefix(topology, service)
        errors = error_prefix(topology, service)
        self.stage_name = stage.name
        self.data_root = data_root = data.split("year=")[0]  # events/service=<svc>/
        self.error_root = error_root = errors.split("!{")[0]  # errors/service=<svc>/
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal(
                "firehose.amazonaws.com", conditions={"StringEquals": {"sts:ExternalId": Aws.ACCOUNT_ID}}
            ),
            description=f"{self.delivery_stream_name}: read {service}'s stream, write its archive prefixes",
            inline_policies={
                "archive": iam.PolicyDocument(
                    statements=[
                        iam.PolicyStatement(
                            sid="ReadStream",
                            actions=[
                                "kinesis:DescribeStream",
                                "kinesis:DescribeStreamSummary",
                                "kinesis:GetShardIterator",
                                "kinesis:GetRecords",
                                "kinesis:ListShards",
                            ],
                            resources=[stream.stream_arn],
                        ),
                        iam.PolicyStatement(
                            sid="Bucket",
                            actions=[
                                "s3:GetBucketLocation",
                                "s3:ListBucket",
                                "s3:ListBucketMultipartUploads",
                            ],
                            resources=[archive],
                        ),
                        iam.PolicyStatement(
                            sid="ServicePrefixes",
                            actions=["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
                            resources=[f"{archive}/{data_root}*", f"{archive}/{error_root}*"],
                        ),
                        iam.PolicyStatement(
                            sid="DeliveryLogs",
                            actions=["logs:PutLogEvents"],
                            resources=[
                                f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:"
                                f"{self.log_group.log_group_name}:log-stream:{self.log_stream.log_stream_name}"
                            ],
                        ),
                    ]
                )
            },
        )
        self.delivery_stream = firehose.CfnDeliveryStream(
            self,
            "DeliveryStream",
            delivery_stream_name=self.delivery_stream_name,
            delivery_stream_type="KinesisStreamAsSource",
            kinesis_stream_source_configuration=firehose.CfnDeliveryStream.KinesisStreamSourceConfigurationProperty(
                kinesis_stream_arn=stream.stream_arn, role_arn=self.role.role_arn
            ),
            extended_s3_destination_configuration=firehose.CfnDeliveryStream.ExtendedS3DestinationConfigurationProperty(
                bucket_arn=archive,
                role_arn=self.role.role_arn,
                prefix=data,
                error_output_prefix=errors,
                compression_format="GZIP",
                file_extension=".gz",
                buffering_hints=firehose.CfnDeliveryStream.BufferingHintsProperty(
                    interval_in_seconds=stage.firehose_buffer_seconds, size_in_m_bs=stage.firehose_buffer_mib
                ),
                cloud_watch_logging_options=firehose.CfnDeliveryStream.CloudWatchLoggingOptionsProperty(
                    enabled=True,
                    log_group_name=self.log_group.log_group_name,
                    log_stream_name=self.log_stream.log_stream_name,
                ),
            ),
        )
