"""A DynamoDB table exactly as the topology declares it (keys, stream, TTL), secured alike; and
the access of a function to a projection table, whichever generation of it is active.

Blue/green replay (`eventstack replay <projection> --into new`, docs/decisions.md) builds
`<table>-g<UTC timestamp>` outside CloudFormation and then writes its name into the projection's
active-table pointer, the SSM parameter `/eventstack/<stage>/projections/<name>/table`. Every
function that reads or writes the projection resolves its table through that pointer
(`escore.tables.TableResolver`), so `grant_projection_table` gives it, in one place:
  - `<NAME>_TABLE` (the deployed table, used while no pointer exists) and `<NAME>_TABLE_PARAMETER`;
  - `ssm:GetParameter` on exactly that parameter;
  - its DynamoDB actions on the deployed table AND on `<table>-g*` (the replay generations).

The pointer parameter is deliberately NOT a CloudFormation resource: replay switches it outside
CloudFormation, so a later deploy that updates the resource would write the template's value back and
silently point readers at the retired table (and deleting the stack would delete the pointer). While
no pointer exists the resolver falls back to `<NAME>_TABLE`, so a fresh deployment needs none.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from escore.settings import ProjectionTable
from eventstack.topology import Projection, Table
from infra import naming
from infra.functions import ServiceFunction
from infra.stages import StageSettings

# Explicit DynamoDB data actions on projection tables: what CDK's grantReadData/grantReadWriteData
# granted before, minus GetRecords/GetShardIterator (projection tables have no stream). The engine
# writes with TransactWriteItems, which IAM checks as the Put/Update/Delete/ConditionCheck inside it.
PROJECTION_READ_ACTIONS = (
    "dynamodb:BatchGetItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:Query",
    "dynamodb:Scan",
)
PROJECTION_WRITE_ACTIONS = (
    "dynamodb:BatchWriteItem",
    "dynamodb:DeleteItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
)
POINTER_ACTIONS = ("ssm:GetParameter",)


_TYPES = {"S": dynamodb.AttributeType.STRING, "N": dynamodb.AttributeType.NUMBER}


def _attribute(key: tuple[str, str]) -> dynamodb.Attribute:
    name, kind = key
    return dynamodb.Attribute(name=name, type=_TYPES[kind])


def topology_table(scope: Construct, construct_id: str, stage: StageSettings, table: Table) -> dynamodb.Table:
    return dynamodb.Table(
        scope,
        construct_id,
        table_name=naming.table(stage.name, table.logical_name),
        partition_key=_attribute(table.partition_key),
        sort_key=_attribute(table.sort_key) if table.sort_key else None,
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        stream=dynamodb.StreamViewType.NEW_IMAGE if table.stream else None,
        time_to_live_attribute=table.ttl_attribute,
        deletion_protection=stage.deletion_protection,
        removal_policy=RemovalPolicy.RETAIN if stage.retain_data else RemovalPolicy.DESTROY,
    )


def grant_projection_table(
    function: ServiceFunction,
    *,
    stage: StageSettings,
    projection: Projection,
    table: dynamodb.ITable,
    write: bool,
) -> None:
    """Let `function` find the projection's active table through its pointer and read (or read and
    write) it, whether it is the deployed table or a replay generation `<table>-g<timestamp>`."""
    stack = Stack.of(function)
    pointer = naming.table_pointer(stage.name, projection.name)
    generations = naming.table_generations(stage.name, projection.name)
    # The parameter itself is never created here: see the module docstring (a deploy would reset it).
    for name, value in ProjectionTable.environment(projection.name, table.table_name, pointer).items():
        function.function.add_environment(name, value)
    function.role.add_to_policy(
        iam.PolicyStatement(actions=list(POINTER_ACTIONS), resources=[naming.parameter_arn(stack, pointer)])
    )
    actions = PROJECTION_READ_ACTIONS + (PROJECTION_WRITE_ACTIONS if write else ())
    function.role.add_to_policy(
        iam.PolicyStatement(
            actions=sorted(actions), resources=[table.table_arn, naming.table_arn(stack, generations)]
        )
    )
    function.table_generations.append(generations)
