"""The archive as an audit log (docs/audit.md): Glue tables over the archive bucket, an Athena
workgroup with its own results bucket, and the one managed policy a reader needs.

No crawler and no partitions to register: both tables use partition projection on the archive's
own key layout (`events/service=<svc>/year=YYYY/month=MM/day=DD/hour=HH/`, infra/archive.py), so
a new hour (or, after a deploy, a new service) is queryable the moment Firehose writes it.

- `events_raw` (escore.naming.AUDIT_TABLE): the OpenX JSON SerDe, one row per archived line, typed
  envelope columns. `data` and `metadata` are JSON objects in the line, declared `string`: the
  SerDe's string inspector (JsonStringJavaObjectInspector, "built to tolerate non-string values and
  treat them as strings") returns the object's JSON text. That text is re-serialized (key order and
  number spelling may differ from the line), so what must stay byte-exact reads `events_lines`.
- `events_lines` (AUDIT_LINES_TABLE): the same objects, one `string` column `line` holding each line
  whole (LazySimpleSerDe with the field delimiter \\u0001, which compact JSON never contains: it
  would be escaped inside strings). The replay plan (eventstack/sql/replay_plan.sql) reads it so
  every envelope field reaches the worker exactly as archived.

The workgroup enforces its settings (results location, SSE-S3, engine version 3, CloudWatch
metrics, the stage's bytes-scanned cutoff per query): a client cannot point results elsewhere or
lift the cutoff. Its results bucket holds query results (`results/`) and replay plans
(`replay-plans/`, escore.naming.replay_plan_prefix), both expiring after the stage's days.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_athena as athena
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from escore import naming as core_naming
from escore.naming import AUDIT_LINES_TABLE, AUDIT_TABLE
from eventstack.topology import Topology
from infra.stages import StageSettings

RESULTS_PREFIX = "results/"
PLANS_PREFIX = "replay-plans/"
ENGINE_VERSION = "Athena engine version 3"
FIRST_YEAR, LAST_YEAR = 2024, 2045  # the projected years; a query names its window to prune the rest

# name, Glue type; `service` is a partition key (the envelope's field is the same value).
RAW_COLUMNS = (
    ("event_id", "string"),
    ("stream_id", "string"),
    ("version", "bigint"),
    ("type", "string"),
    ("schema_version", "int"),
    ("occurred_at", "string"),
    ("data", "string"),
    ("metadata", "string"),
)
LINE_COLUMNS = (("line", "string"),)
PARTITION_KEYS = ("service", "year", "month", "day", "hour")
_RANGES = {"year": (FIRST_YEAR, LAST_YEAR, 4), "month": (1, 12, 2), "day": (1, 31, 2), "hour": (0, 23, 2)}

OPENX_JSON = "org.openx.data.jsonserde.JsonSerDe"
LAZY_SIMPLE = "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe"
TEXT_INPUT = "org.apache.hadoop.mapred.TextInputFormat"
TEXT_OUTPUT = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
LINE_DELIMITER = "\u0001"


def results_bucket_name(stage: StageSettings) -> str:
    return core_naming.audit_results_bucket(stage.name, Aws.ACCOUNT_ID, Aws.REGION)


def projection_parameters(topology: Topology, archive_bucket: str) -> dict[str, str]:
    """Table parameters: partition projection over the archive's key layout."""
    services = ",".join(s.name for s in topology.services)
    params = {
        "projection.enabled": "true",
        "projection.service.type": "enum",
        "projection.service.values": services,
        "storage.location.template": (
            f"s3://{archive_bucket}/{topology.archive_prefix}service=${{service}}/year=${{year}}/"
            "month=${month}/day=${day}/hour=${hour}/"
        ),
    }
    for key, (low, high, digits) in _RANGES.items():
        params[f"projection.{key}.type"] = "integer"
        params[f"projection.{key}.range"] = f"{low},{high}"
        params[f"projection.{key}.digits"] = str(digits)
    return params


class AuditLog(Construct):
    """Glue database and tables, the Athena workgroup and its results bucket, the reader policy."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageSettings,
        topology: Topology,
        archive: s3.IBucket,
        access_logs: s3.IBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.stage_name = stage.name
        self.database_name = core_naming.audit_database(stage.name)
        self.workgroup_name = core_naming.audit_workgroup(stage.name)
        self.archive_prefix = topology.archive_prefix
        self.archive_bucket = archive
        self.results_bucket = s3.Bucket(
            self,
            "Results",
            bucket_name=results_bucket_name(stage),
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="audit/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-results-and-plans",
                    expiration=Duration.days(stage.audit_results_expiration_days),
                    noncurrent_version_expiration=Duration.days(1),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
            removal_policy=RemovalPolicy.RETAIN if stage.retain_data else RemovalPolicy.DESTROY,
        )

        catalog = Aws.ACCOUNT_ID
        self.database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=catalog,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=self.database_name,
                description=f"eventstack {stage.name}: the event archive as tables (partition projection)",
            ),
        )
        location = f"s3://{archive.bucket_name}/{topology.archive_prefix}"
        parameters = projection_parameters(topology, archive.bucket_name)
        self.raw_table = self._table(
            "EventsRaw",
            name=AUDIT_TABLE,
            description="One row per archived line (duplicates included), the envelope's fields typed",
            columns=RAW_COLUMNS,
            serde=glue.CfnTable.SerdeInfoProperty(
                serialization_library=OPENX_JSON,
                # a line that is not JSON fails the query rather than turning into NULLs unseen
                parameters={"ignore.malformed.json": "false", "case.insensitive": "true"},
            ),
            location=location,
            parameters={**parameters, "classification": "json"},
        )
        self.lines_table = self._table(
            "EventsLines",
            name=AUDIT_LINES_TABLE,
            description="One row per archived line, the whole line as written (for the replay plan)",
            columns=LINE_COLUMNS,
            serde=glue.CfnTable.SerdeInfoProperty(
                serialization_library=LAZY_SIMPLE,
                parameters={"field.delim": LINE_DELIMITER, "serialization.format": LINE_DELIMITER},
            ),
            location=location,
            parameters={**parameters, "classification": "text"},
        )

        self.workgroup = athena.CfnWorkGroup(
            self,
            "WorkGroup",
            name=self.workgroup_name,
            description=f"eventstack {stage.name}: audit queries and replay plans over the archive",
            state="ENABLED",
            recursive_delete_option=not stage.retain_data,
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                enforce_work_group_configuration=True,
                publish_cloud_watch_metrics_enabled=True,
                bytes_scanned_cutoff_per_query=stage.audit_bytes_scanned_cutoff,
                requester_pays_enabled=False,
                engine_version=athena.CfnWorkGroup.EngineVersionProperty(
                    selected_engine_version=ENGINE_VERSION
                ),
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=f"s3://{self.results_bucket.bucket_name}/{RESULTS_PREFIX}",
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(
                        encryption_option="SSE_S3"
                    ),
                    expected_bucket_owner=Aws.ACCOUNT_ID,
                ),
            ),
        )
        self.workgroup_arn = stack.format_arn(service="athena", resource="workgroup", resource_name=self.workgroup_name)
        self.reader_policy = self._reader_policy(stack, stage, archive)

    # the tables ---------------------------------------------------------------------------------
    def _table(
        self,
        construct_id: str,
        *,
        name: str,
        description: str,
        columns: tuple[tuple[str, str], ...],
        serde: glue.CfnTable.SerdeInfoProperty,
        location: str,
        parameters: dict[str, str],
    ) -> glue.CfnTable:
        table = glue.CfnTable(
            self,
            construct_id,
            catalog_id=self.database.catalog_id,
            database_name=self.database_name,
            table_input=glue.CfnTable.TableInputProperty(
                name=name,
                description=description,
                table_type="EXTERNAL_TABLE",
                parameters={**parameters, "EXTERNAL": "TRUE", "compressionType": "gzip"},
                partition_keys=[glue.CfnTable.ColumnProperty(name=key, type="string") for key in PARTITION_KEYS],
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    columns=[glue.CfnTable.ColumnProperty(name=n, type=t) for n, t in columns],
                    location=location,
                    input_format=TEXT_INPUT,
                    output_format=TEXT_OUTPUT,
                    compressed=True,
                    serde_info=serde,
                ),
            ),
        )
        table.node.add_dependency(self.database)
        return table

    # who may read -------------------------------------------------------------------------------
    def table_arns(self, stack: Stack) -> list[str]:
        return [
            stack.format_arn(service="glue", resource="table", resource_name=f"{self.database_name}/{t}")
            for t in (AUDIT_TABLE, AUDIT_LINES_TABLE)
        ]

    def glue_read_resources(self, stack: Stack) -> list[str]:
        """What Athena's Glue calls check for a query over these tables: the catalog, the database, the tables."""
        return [
            stack.format_arn(service="glue", resource="catalog"),
            stack.format_arn(service="glue", resource="database", resource_name=self.database_name),
            *self.table_arns(stack),
        ]

    def _reader_policy(self, stack: Stack, stage: StageSettings, archive: s3.IBucket) -> iam.ManagedPolicy:
        results = self.results_bucket
        return iam.ManagedPolicy(
            self,
            "ReaderPolicy",
            managed_policy_name=core_naming.physical(stage.name, "audit-reader"),
            description=(
                f"Query the {stage.name} archive with Athena: this workgroup, these Glue tables, the archive's "
                "events/ prefix and the workgroup's results location only"
            ),
            statements=[
                iam.PolicyStatement(
                    sid="RunQueriesInTheAuditWorkgroup",
                    actions=[
                        "athena:GetWorkGroup",
                        "athena:StartQueryExecution",
                        "athena:StopQueryExecution",
                        "athena:GetQueryExecution",
                        "athena:GetQueryResults",
                        "athena:GetQueryRuntimeStatistics",
                        "athena:BatchGetQueryExecution",
                        "athena:ListQueryExecutions",
                    ],
                    resources=[self.workgroup_arn],
                ),
                iam.PolicyStatement(
                    sid="ReadTheAuditTables",
                    actions=["glue:GetDatabase", "glue:GetTable", "glue:GetTables", "glue:GetPartitions"],
                    resources=self.glue_read_resources(stack),
                ),
                iam.PolicyStatement(
                    sid="LocateTheArchive",
                    actions=["s3:GetBucketLocation"],
                    resources=[archive.bucket_arn],
                ),
                iam.PolicyStatement(
                    sid="ListTheArchiveEvents",
                    actions=["s3:ListBucket"],
                    resources=[archive.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{self.archive_prefix}*"]}},
                ),
                iam.PolicyStatement(
                    sid="ReadTheArchiveEvents",
                    actions=["s3:GetObject"],
                    resources=[archive.arn_for_objects(f"{self.archive_prefix}*")],
                ),
                iam.PolicyStatement(
                    sid="ResultsBucket",
                    actions=["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
                    resources=[results.bucket_arn],
                ),
                iam.PolicyStatement(
                    sid="WriteAndReadResults",
                    actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
                    resources=[results.arn_for_objects(f"{RESULTS_PREFIX}*")],
                ),
            ],
        )
