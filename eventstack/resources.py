"""Where the CLI finds a stage's physical resources: tables, streams, the archive bucket, DLQs.

One module, so every verb (replay, archive verify, dlq) finds names the same way, against AWS and
against the local runtime alike (both are reached through the standard AWS settings,
`AWS_ENDPOINT_URL` included). Sources, first that answers wins:

1. The local runtime's status (`GET /_local/status`, docs/local.md) when `EVENTSTACK_LOCAL_URL` is set.
2. SSM parameters under `/eventstack/<stage>/resources/`, if a deployment (or the local runtime)
   wrote them (`publish` writes them):
       /eventstack/<stage>/resources/archive-bucket           bucket name
       /eventstack/<stage>/resources/tables/<logical name>     table name (event stores, projections)
       /eventstack/<stage>/resources/streams/<service>         Kinesis stream name
       /eventstack/<stage>/resources/dlqs/<mapping name>       SQS queue name
   With no `--stage`, the one stage found under `/eventstack/` is used (several: an error naming them).
3. When `AWS_ENDPOINT_URL` is a loopback address: the local runtime's names, which are the
   topology's logical names, stage `local`.
4. Otherwise the physical names the CDK app gives them (for tables, streams, queues and the bucket,
   the account from STS).

Every name is made by the rules of `escore.naming`, the ones the CDK app and the local runtime use.
Mapping names (DLQ keys) are `Service.publisher_function_name` for a publisher's DynamoDB-stream
mapping and `Subscription.name` for a projector's Kinesis mapping.

A projection's *active* table is not here: it is the pointer of `escore.tables` (replay switches it).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from escore import naming
from escore.naming import LOCAL_STAGE, PARAMETER_ROOT
from eventstack.topology import TOPOLOGY, Topology

LOCAL_URL_ENV = "EVENTSTACK_LOCAL_URL"
STAGE_ENV = "EVENTSTACK_STAGE"


class ResourceError(RuntimeError):
    """The CLI cannot tell which resources to use (no stage, nothing deployed, runtime not running)."""


@dataclass(frozen=True)
class Resources:
    stage: str
    archive_bucket: str
    tables: dict[str, str]  # logical name -> table name (event stores `<service>_events`, projections)
    streams: dict[str, str]  # service -> Kinesis stream name
    dlqs: dict[str, str] = field(default_factory=dict)  # mapping name -> SQS queue name
    source: str = "convention"  # "local-status" | "ssm" | "local-plan" | "convention"
    local_status: dict[str, Any] | None = None

    def table(self, logical_name: str) -> str:
        try:
            return self.tables[logical_name]
        except KeyError:
            raise ResourceError(f"no table {logical_name!r} in stage {self.stage} ({self.source})") from None

    def event_store_table(self, service: str) -> str:
        return self.table(TOPOLOGY.service(service).event_store.logical_name)

    def stream(self, service: str) -> str:
        try:
            return self.streams[service]
        except KeyError:
            raise ResourceError(f"no stream for service {service!r} in stage {self.stage}") from None

    def pointer_parameter(self, projection: str) -> str:
        """The projection's active-table pointer (SSM), see escore.tables."""
        return naming.table_parameter(self.stage, projection)


def mapping_names(topology: Topology = TOPOLOGY) -> list[str]:
    names = [s.publisher_function_name for s in topology.services]
    names += [sub.name for sub in topology.subscriptions]
    return names


def logical_tables(topology: Topology = TOPOLOGY) -> list[str]:
    """Every table's logical name: the event stores, then the projections."""
    names = [s.event_store.logical_name for s in topology.services]
    names += [p.name for _, p in topology.projections]
    return names


def region() -> str | None:
    """AWS_REGION (docs/deploy.md), else the SDK's own chain; us-east-1 against the local runtime."""
    import boto3

    found = os.environ.get("AWS_REGION") or boto3.session.Session().region_name
    if not found and is_local_endpoint():
        found = "us-east-1"
    return found or None


def client(name: str, **kwargs: Any) -> Any:
    """A boto3 client as every verb makes it: standard settings (AWS_ENDPOINT_URL, AWS_PROFILE), AWS_REGION."""
    import boto3
    from botocore.config import Config

    kwargs.setdefault("config", Config(retries={"max_attempts": 10, "mode": "adaptive"}, max_pool_connections=32))
    return boto3.client(name, region_name=region(), **kwargs)


_client = client


def load(
    stage: str | None = None,
    *,
    ssm: Any = None,
    local_url: str | None = None,
    topology: Topology = TOPOLOGY,
) -> Resources:
    """The resources of `stage` (see the module's docstring for where the names come from)."""
    local_url = local_url or os.environ.get(LOCAL_URL_ENV)
    if local_url:
        return from_local_status(fetch_local_status(local_url), topology=topology)
    stage = stage or os.environ.get(STAGE_ENV) or None
    ssm = ssm or _client("ssm")
    found = _from_ssm(ssm, stage, topology)
    if found is not None:
        return found
    if is_local_endpoint():
        return from_local_plan(topology)
    if stage is None:
        raise ResourceError(
            f"no stage: pass --stage (or set {STAGE_ENV}); nothing found under {PARAMETER_ROOT}/ in SSM"
        )
    return by_convention(stage, topology=topology)


def fetch_local_status(url: str, timeout: float = 5.0) -> dict[str, Any]:
    target = url.rstrip("/") + "/_local/status"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as answer:
            status: dict[str, Any] = json.loads(answer.read())
            return status
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ResourceError(f"the local runtime does not answer at {target}: {exc}") from exc


def from_local_status(status: dict[str, Any], *, topology: Topology = TOPOLOGY) -> Resources:
    dlqs: dict[str, str] = {}
    for mapping in status.get("mappings", []):
        queue = mapping.get("dlq_name") or mapping.get("dlq_queue")
        name = mapping.get("name")
        if isinstance(queue, str) and isinstance(name, str):
            dlqs[name] = queue
    if not dlqs:
        dlqs = from_local_plan(topology).dlqs
    return Resources(
        stage=str(status.get("stage") or LOCAL_STAGE),
        archive_bucket=str(status["archive_bucket"]),
        tables={str(k): str(v) for k, v in status.get("tables", {}).items()},
        streams={str(k): str(v) for k, v in status.get("streams", {}).items()},
        dlqs=dlqs,
        source="local-status",
        local_status=status,
    )


def _from_ssm(ssm: Any, stage: str | None, topology: Topology) -> Resources | None:
    root = naming.resources_root(stage) if stage else f"{PARAMETER_ROOT}/"
    try:
        params = _parameters_by_path(ssm, root)
    except Exception as exc:  # no SSM permission or endpoint: fall through to the other sources
        if getattr(exc, "response", None) is None:
            raise
        return None
    if stage is None:
        stages = sorted({name.split("/")[2] for name in params if name.count("/") >= 4 and "/resources/" in name})
        if not stages:
            return None
        if len(stages) > 1:
            raise ResourceError(f"several stages deployed ({', '.join(stages)}): pass --stage")
        stage = stages[0]
        root = naming.resources_root(stage)
    values = {name[len(root):]: value for name, value in params.items() if name.startswith(root)}
    if "archive-bucket" not in values:
        return None
    tables = {k.split("/", 1)[1]: v for k, v in values.items() if k.startswith("tables/")}
    streams = {k.split("/", 1)[1]: v for k, v in values.items() if k.startswith("streams/")}
    dlqs = {k.split("/", 1)[1]: v for k, v in values.items() if k.startswith("dlqs/")}
    return Resources(stage, values["archive-bucket"], tables, streams, dlqs, source="ssm")


def _parameters_by_path(ssm: Any, path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    kwargs: dict[str, Any] = {"Path": path, "Recursive": True}
    while True:
        page = ssm.get_parameters_by_path(**kwargs)
        for param in page.get("Parameters", []):
            out[param["Name"]] = param["Value"]
        token = page.get("NextToken")
        if not token:
            return out
        kwargs["NextToken"] = token


def is_local_endpoint() -> bool:
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    host = urllib.parse.urlparse(endpoint).hostname if endpoint else None
    return host in ("127.0.0.1", "localhost", "::1")


def from_local_plan(topology: Topology = TOPOLOGY) -> Resources:
    """The local runtime's names: the logical names themselves (eventstack.local.plan creates them)."""
    return Resources(
        stage=LOCAL_STAGE,
        archive_bucket=naming.local_archive_bucket(),
        tables={name: name for name in logical_tables(topology)},
        streams={s.name: s.stream_logical_name for s in topology.services},
        dlqs={name: naming.dlq(name) for name in mapping_names(topology)},
        source="local-plan",
    )


def by_convention(
    stage: str, *, topology: Topology = TOPOLOGY, account: str | None = None, region_name: str | None = None
) -> Resources:
    tables = {name: naming.physical(stage, name) for name in logical_tables(topology)}
    streams = {s.name: naming.physical(stage, s.stream_logical_name) for s in topology.services}
    dlqs = {name: naming.physical(stage, naming.dlq(name)) for name in mapping_names(topology)}
    if account is None:
        account = str(_client("sts").get_caller_identity()["Account"])
    bucket = naming.archive_bucket(stage, account, region_name or region() or "us-east-1")
    return Resources(stage, bucket, tables, streams, dlqs, source="convention")


def publish(resources: Resources, ssm: Any) -> None:
    """Write `resources` as the SSM parameters of source 2 (what CDK and the local runtime should do)."""
    root = naming.resources_root(resources.stage)
    entries = {"archive-bucket": resources.archive_bucket}
    entries.update({f"tables/{k}": v for k, v in resources.tables.items()})
    entries.update({f"streams/{k}": v for k, v in resources.streams.items()})
    entries.update({f"dlqs/{k}": v for k, v in resources.dlqs.items()})
    for key, value in entries.items():
        ssm.put_parameter(Name=root + key, Value=value, Type="String", Overwrite=True)
