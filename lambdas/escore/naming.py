"""Every naming rule of eventstack, in one pure module (no boto3, no CDK).

The handlers, the CDK app (`infra/`), the local runtime's plan and the CLI all import these
functions; nothing else spells a name out. Three layers of names:

- **Logical names**, derived from a service or projection name alone: the event-store table
  `<service>_events`, the stream `<service>-events`, the functions `<service>-api`,
  `<service>-publisher` and `<projection>-projector`, the mappings `<service>-publisher` and
  `<projection>-from-<source service>`, each mapping's dead-letter queue `<mapping>-dlq`, and the
  delivery stream `<service>-archive`. The local runtime uses them as physical names.
- **Physical names** on AWS: `eventstack-<stage>-<logical name>`; the archive bucket adds the
  account and region (globally unique); a table that `replay --into new` builds adds `-g<time>`.
- **Parameters** (SSM) under `/eventstack/<stage>/`: a projection's active-table pointer and the
  resources index the CLI reads.

And the environment variables the handlers read (their values set by CDK or the local runtime;
`escore.settings` parses them).
"""

from __future__ import annotations

PROJECT = "eventstack"
LOCAL_STAGE = "local"
PARAMETER_ROOT = f"/{PROJECT}"

# Environment variables read by the handlers (escore.settings).
ENV_SERVICE = "SERVICE_NAME"
ENV_EVENT_STORE_TABLE = "EVENT_STORE_TABLE"
ENV_STREAM_NAME = "EVENT_STREAM_NAME"
ENV_SNAPSHOT_EVERY = "SNAPSHOT_EVERY"
ENV_PROJECTION_MODULE = "PROJECTION_MODULE"
ENV_NOTIFIER = "NOTIFIER"  # a projection's effects: "sns" (AWS) or "log" (the local runtime's log)
ENV_NOTIFICATION_TOPIC_ARN = "NOTIFICATION_TOPIC_ARN"  # the SNS topic an "sns" notifier publishes to

# Every projector runs this one handler, on the folds of the module its environment names.
PROJECTOR_HANDLER = "escore.projector_lambda.handler"


def projection_env_prefix(logical_name: str) -> str:
    """The prefix of a projection's variables, e.g. USER_TIMELINE_ (escore.settings.ProjectionTable)."""
    return f"{logical_name.upper()}_"


def table_env(logical_name: str) -> str:
    """The variable with a projection's initial table, e.g. USER_TIMELINE_TABLE."""
    return f"{projection_env_prefix(logical_name)}TABLE"


def table_parameter_env(logical_name: str) -> str:
    """The variable with a projection's active-table pointer name, e.g. USER_TIMELINE_TABLE_PARAMETER."""
    return f"{table_env(logical_name)}_PARAMETER"


# Logical names.
def api_handler(service: str) -> str:
    """A service's API function handler: `build` in `lambdas/<service>/api.py`, as `lazy(build)`."""
    return f"{service}.api.handler"


def contract_module(service: str) -> str:
    """A service's event contract (escore.contract): `lambdas/<service>/contract.py`."""
    return f"{service}.contract"


def domain_module(service: str) -> str:
    """A service's aggregates (escore.aggregate): `lambdas/<service>/domain.py`; `eventstack history` folds them."""
    return f"{service}.domain"


def event_store_table(service: str) -> str:
    return f"{service}_events"


def stream(service: str) -> str:
    return f"{service}-events"


def api_function(service: str) -> str:
    return f"{service}-api"


def publisher_function(service: str) -> str:
    """Also the name of the publisher's mapping (the store's change stream to the function)."""
    return f"{service}-publisher"


def projector_function(projection: str) -> str:
    return f"{projection}-projector"


def subscription(projection: str, source_service: str) -> str:
    """The mapping of a projector on one source service's Kinesis stream."""
    return f"{projection}-from-{source_service}"


def dlq(mapping: str) -> str:
    """A mapping's on-failure destination (SQS), logical."""
    return f"{mapping}-dlq"


def delivery_stream(service: str) -> str:
    return f"{service}-archive"


def api(service: str) -> str:
    return f"{service}-api"


def alarm_topic() -> str:
    return "alarms"


def notification_topic(projection: str) -> str:
    """The SNS topic a projection's effects publish to, e.g. user_notifications-notifications."""
    return f"{projection}-notifications"


# Physical names on AWS.
def prefix(stage: str) -> str:
    return f"{PROJECT}-{stage}"


def physical(stage: str, logical_name: str) -> str:
    """A table, stream, function, queue, delivery stream or API of `stage` on AWS."""
    return f"{prefix(stage)}-{logical_name}"


def shared_stack(stage: str) -> str:
    return physical(stage, "shared")


def service_stack(stage: str, service: str) -> str:
    return physical(stage, service)


def table_generation(table_name: str, stamp: str) -> str:
    """A table `eventstack replay --into new` builds: `<table>-g<stamp>` (stamp: UTC, e.g. 20261201T120000)."""
    return f"{table_name}-g{stamp}"


def table_generations(stage: str, logical_name: str) -> str:
    """The IAM pattern of every generation of a projection's table."""
    return table_generation(physical(stage, logical_name), "*")


def archive_bucket(stage: str, account: str, region: str) -> str:
    return physical(stage, f"archive-{account}-{region}")


def local_archive_bucket() -> str:
    return f"{PROJECT}-archive-{LOCAL_STAGE}"



# The archive as an audit log (docs/audit.md) and the replay plan (docs/replay.md).
AUDIT_TABLE = "events_raw"  # the Glue table over the archive: one row per archived line, typed columns
AUDIT_LINES_TABLE = "events_lines"  # the same objects, one string column `line` (the envelope as archived)
AUDIT_VIEW = "events"  # events_raw de-duplicated by event_id (eventstack/sql/events.sql)


def audit_database(stage: str) -> str:
    """The Glue database of `stage`'s archive tables: Glue and Athena want lowercase and underscores."""
    return f"{PROJECT}_{stage}".lower().replace("-", "_")


def audit_workgroup(stage: str) -> str:
    """The Athena workgroup that `eventstack query --engine athena` and `replay --engine aws` run in."""
    return physical(stage, "audit")


def audit_results_bucket(stage: str, account: str, region: str) -> str:
    """The Athena workgroup's own results bucket (encrypted, expiring); replay plans go there too."""
    return physical(stage, f"audit-{account}-{region}")


def replay_plan_prefix(projection: str, run: str) -> str:
    """Where a replay's plan (its bucketed event files) goes, in the audit results bucket (not the
    Object-Locked archive, whose default retention would keep every plan file for its lock period)."""
    return f"replay-plans/{projection}/{run}/"


def replay_worker_function() -> str:
    """The replay-worker Lambda (logical) that the Step Functions Distributed Map invokes per plan file."""
    return "replay-worker"


def replay_state_machine() -> str:
    """The state machine (logical) that runs a replay's Map step on AWS."""
    return "replay"


# Parameters.
def table_parameter(stage: str, logical_name: str) -> str:
    """A projection's active-table pointer, e.g. /eventstack/dev/projections/user_timeline/table."""
    return f"{PARAMETER_ROOT}/{stage}/projections/{logical_name}/table"


def resources_root(stage: str) -> str:
    """The index of a stage's physical resources that the CLI reads (eventstack.resources)."""
    return f"{PARAMETER_ROOT}/{stage}/resources/"


def user_pool_arn_parameter(stage: str) -> str:
    """The shared Cognito user pool's ARN (only with auth=cognito)."""
    return f"{PARAMETER_ROOT}/{stage}/auth/user-pool-arn"


def replay_parameter(stage: str, projection: str) -> str:
    """The progress record of a projection's replay (eventstack.replay)."""
    return f"{PARAMETER_ROOT}/{stage}/projections/{projection}/replay"
