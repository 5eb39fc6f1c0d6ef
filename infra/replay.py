"""`eventstack replay --engine aws`: the Step Functions state machine that folds a replay plan, and its
worker Lambda (docs/replay.md, "On AWS: Athena and Step Functions").

The CLI (eventstack.replay_aws.run_map) has Athena UNLOAD the window's de-duplicated events into N
bucket files (by stream-id hash, each sorted by stream and version) under the plan's prefix of the
audit results bucket, writes the plan's manifest.json (one item per bucket, its files grouped), then
starts one execution with

    {"plan": {"manifest_key": "<prefix>manifest.json", "results_prefix": "<prefix>results", ...},
     "max_concurrency": <from the target table's write budget>}

The machine has one state, a Distributed Map:
- ItemReader: the manifest (a JSON array read with s3:getObject), so the item list never passes
  through the execution's 256 KiB input. Each entry is the worker's whole event (its handler's
  docstring: projection, folds, stage, table, bucket, keys, index, count, cuts, ...), so no
  ItemSelector: a child's input is its manifest entry.
- ItemProcessor: DISTRIBUTED mode, STANDARD child executions (a file is sized for up to 15 minutes
  of Lambda; an EXPRESS child may run only 5), one Task invoking the worker.
- Retry on the Task: a failed or timed-out item is retried alone, in its own child execution, while
  the others go on. The worker writes a done marker per file into the target table, so a retried
  item, or a second execution of the same plan, skips what was finished.
- ToleratedFailurePercentage 100: a file that still fails after its retries does not abort the
  other children mid-fold (they finish and mark themselves done). The execution then succeeds with
  failed items, and run_map reads the Map Run's counts (DescribeMapRun) and the failed children's
  inputs to report which files failed; running the replay again folds only those.
- MaxConcurrencyPath `$.max_concurrency`: concurrency is chosen per execution (the target table's
  write budget differs per projection and per run), with the construct's ceiling as a fixed fallback
  the CLI never exceeds.
- ResultWriter: every child's result (the worker's FileResult: events, items written, problems) is
  written as JSON files under the execution's `results_prefix` (the plan's `results/`), which run_map
  adds up into the replay's summary; ResultPath DISCARD keeps the state's output small.

The worker reads the plan prefix only and writes the projection tables only (the deployed table of
every projection and every replay generation `<table>-g*`), nothing else. The managed policy
`eventstack-<stage>-replay-operator` is what the CLI's principal needs beside the audit reader's: the
plan prefix (UNLOAD writes with the caller's credentials), starting and watching this machine.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from escore import naming as core_naming
from eventstack.topology import Topology
from infra import naming
from infra.audit import PLANS_PREFIX
from infra.functions import FunctionSpec, ServiceFunction, retention
from infra.stages import StageSettings

WORKER_HANDLER = "replay_worker.handler.handler"  # its module docstring holds the item, the manifest, the marker
WORKER_MEMORY_MB = 3072  # the handler's figure for a bucket of a few million events (and ~1.7 vCPU)
# What the worker calls (escore.replay_file, escore.rebuild.write_fold): its done marker and the
# version-conditioned writes of owned and shared items. Nothing that lists, scans or deletes.
WORKER_TABLE_ACTIONS = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem")
WORKER_TIMEOUT_SECONDS = 900  # Lambda's ceiling; run_map sizes files to fit well inside it
MAX_CONCURRENCY_CEILING = 1000
ITEM_RETRY_ATTEMPTS = 2
EXECUTION_TIMEOUT = Duration.hours(24)


class ReplayMachine(Construct):
    """The replay worker function and the Distributed Map state machine that drives it."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageSettings,
        topology: Topology,
        plans: s3.IBucket,
        code: lambda_.Code | None,
        handler: str = WORKER_HANDLER,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.stage_name = stage.name
        self.plans_bucket = plans
        self.worker = ServiceFunction(
            self,
            "Worker",
            stage=stage,
            code=code,
            spec=FunctionSpec(
                name=core_naming.replay_worker_function(),
                handler=handler,
                service="replay",
                description="replay --engine aws: fold one plan file (one stream-hash bucket) into the target table",
                memory_mb=WORKER_MEMORY_MB,
                timeout_seconds=WORKER_TIMEOUT_SECONDS,
            ),
        )
        self._grant_worker(stack, stage, topology, plans)

        self.state_machine_name = naming.function(stage.name, core_naming.replay_state_machine())
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/vendedlogs/states/{self.state_machine_name}",
            retention=retention(stage.log_retention_days),
            removal_policy=RemovalPolicy.RETAIN if stage.retain_data else RemovalPolicy.DESTROY,
        )
        fold = tasks.LambdaInvoke(
            self,
            "FoldFile",
            lambda_function=self.worker.function,
            payload_response_only=True,
            retry_on_service_exceptions=True,  # Lambda's own transient errors (ServiceException, throttling)
            comment="Fold one plan file; the worker skips a file whose done marker is in the table",
        )
        fold.add_retry(
            errors=[sfn.Errors.ALL],
            max_attempts=ITEM_RETRY_ATTEMPTS,
            interval=Duration.seconds(10),
            backoff_rate=3,
            jitter_strategy=sfn.JitterType.FULL,
        )
        self.map = sfn.DistributedMap(
            self,
            "FoldEveryFile",
            comment="One child execution per plan file (stream-hash bucket)",
            item_reader=sfn.S3JsonItemReader(bucket=plans, key=sfn.JsonPath.string_at("$.plan.manifest_key")),
            map_execution_type=sfn.StateMachineType.STANDARD,
            max_concurrency_path="$.max_concurrency",
            tolerated_failure_percentage=100,
            # each child's FileResult (and each failed child's error) to S3, for the CLI's summary
            result_writer_v2=sfn.ResultWriterV2(bucket=plans, prefix=sfn.JsonPath.string_at("$.plan.results_prefix")),
            result_path=sfn.JsonPath.DISCARD,
            label="FoldEveryFile",
        )
        self.map.item_processor(fold)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=self.state_machine_name,
            state_machine_type=sfn.StateMachineType.STANDARD,
            comment="replay --engine aws: fold every file of a replay plan (Distributed Map)",
            definition_body=sfn.DefinitionBody.from_chainable(self.map),
            timeout=EXECUTION_TIMEOUT,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.operator_policy = self._operator_policy(stack, stage, plans)

    def _operator_policy(self, stack: Stack, stage: StageSettings, plans: s3.IBucket) -> iam.ManagedPolicy:
        """What `replay --engine aws` needs beyond the audit reader's policy (attach both, and what
        docs/replay.md "Against AWS" lists for the rest of a replay): the plan prefix, this machine."""
        name = self.state_machine_name

        def states(resource: str, resource_name: str) -> str:
            return stack.format_arn(
                service="states", resource=resource, resource_name=resource_name, arn_format=ArnFormat.COLON_RESOURCE_NAME
            )

        return iam.ManagedPolicy(
            self,
            "OperatorPolicy",
            managed_policy_name=core_naming.physical(stage.name, "replay-operator"),
            description=(
                f"replay --engine aws in {stage.name}: write and read the replay plans, run and watch the replay "
                "state machine (with the audit reader policy for the Athena side)"
            ),
            statements=[
                iam.PolicyStatement(
                    sid="ListThePlans",
                    actions=["s3:ListBucket"],
                    resources=[plans.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{PLANS_PREFIX}*"]}},
                ),
                iam.PolicyStatement(
                    sid="WriteAndReadThePlans",  # UNLOAD writes with the caller's credentials; the CLI writes the manifest
                    actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
                    resources=[plans.arn_for_objects(f"{PLANS_PREFIX}*")],
                ),
                iam.PolicyStatement(
                    sid="StartTheReplayMachine",
                    actions=["states:StartExecution"],
                    resources=[self.state_machine.state_machine_arn],
                ),
                iam.PolicyStatement(
                    sid="WatchItsExecutions",
                    actions=["states:DescribeExecution", "states:ListMapRuns"],
                    resources=[states("execution", f"{name}:*"), states("execution", f"{name}/*")],
                ),
                iam.PolicyStatement(
                    sid="WatchItsMapRuns",
                    actions=["states:DescribeMapRun", "states:ListExecutions"],
                    resources=[states("mapRun", f"{name}/*"), self.state_machine.state_machine_arn],
                ),
            ],
        )

    def _grant_worker(self, stack: Stack, stage: StageSettings, topology: Topology, plans: s3.IBucket) -> None:
        role = self.worker.role
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadThePlanFiles",
                actions=["s3:GetObject"],
                resources=[plans.arn_for_objects(f"{PLANS_PREFIX}*")],
            )
        )
        tables: list[str] = []
        for _, projection in topology.projections:
            tables.append(naming.table_arn(stack, naming.table(stage.name, projection.name)))
            generations = naming.table_generations(stage.name, projection.name)
            tables.append(naming.table_arn(stack, generations))
            self.worker.table_generations.append(generations)
        role.add_to_policy(
            iam.PolicyStatement(
                sid="FoldIntoTheProjectionTables",
                actions=list(WORKER_TABLE_ACTIONS),
                resources=tables,
            )
        )
