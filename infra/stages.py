"""Stage settings, chosen with CDK context: `-c stage=dev|prod` (default dev).

A few options can be overridden per deployment, whatever the stage:
  -c auth=iam|cognito                      API authorization (default iam)
  -c object_lock_mode=governance|compliance Object Lock mode of the archive (default governance)
  -c alarm_email=ops@example.com           subscribe an address to the alarm topic
  -c bundle_dependencies=false             tests only: ship lambdas/ without its pip dependencies
                                           (see infra/bundling.py); never deploy such a synth
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from constructs import Construct

AuthMode = Literal["iam", "cognito"]
ObjectLockMode = Literal["governance", "compliance"]
StreamMode = Literal["provisioned", "on_demand"]
Packaging = Literal["zip", "image"]


@dataclass(frozen=True)
class StageSettings:
    name: str
    # Kinesis: one provisioned shard is the cheapest idle stream; on-demand scales without resharding.
    stream_mode: StreamMode
    stream_shards: int  # provisioned mode only
    stream_retention_hours: int
    # Firehose buffering: flush after this many seconds or MiB, whichever comes first.
    firehose_buffer_seconds: int
    firehose_buffer_mib: int
    # Logs
    log_retention_days: int
    log_level: str  # Lambda application log level and POWERTOOLS_LOG_LEVEL
    system_log_level: str  # Lambda platform log level
    api_execution_log_level: Literal["INFO", "ERROR"]
    # API
    auth: AuthMode
    throttle_rate: int  # requests per second, per stage
    throttle_burst: int
    # Archive
    object_lock_mode: ObjectLockMode
    object_lock_days: int
    archive_expiration_days: int | None  # None keeps the archive forever (it is the replay source)
    access_log_expiration_days: int
    # Data protection
    deletion_protection: bool
    retain_data: bool  # RETAIN tables on stack deletion
    # Monitoring
    iterator_age_alarm_seconds: int
    alarm_email: str | None = None
    # Build
    bundle_dependencies: bool = True
    # zip: one code asset for every function; image: one container image (lambdas/Dockerfile)
    packaging: Packaging = "zip"
    # Audit log (infra/audit.py): Athena's per-query scan cutoff (a replay plan scans the whole window
    # once: keep it above the archive's compressed size) and how long query results and plans are kept.
    audit_bytes_scanned_cutoff: int = 100 * 1024**3
    audit_results_expiration_days: int = 7


STAGES: dict[str, StageSettings] = {
    "dev": StageSettings(
        name="dev",
        stream_mode="provisioned",
        stream_shards=1,
        stream_retention_hours=24,
        firehose_buffer_seconds=60,
        firehose_buffer_mib=5,
        log_retention_days=7,
        log_level="DEBUG",
        system_log_level="INFO",
        api_execution_log_level="INFO",
        auth="iam",
        throttle_rate=50,
        throttle_burst=100,
        object_lock_mode="governance",
        object_lock_days=1,
        archive_expiration_days=30,
        access_log_expiration_days=30,
        deletion_protection=False,
        retain_data=False,
        iterator_age_alarm_seconds=900,
    ),
    "prod": StageSettings(
        name="prod",
        stream_mode="on_demand",
        stream_shards=1,
        stream_retention_hours=168,
        firehose_buffer_seconds=300,
        firehose_buffer_mib=64,
        log_retention_days=90,
        log_level="INFO",
        system_log_level="WARN",
        api_execution_log_level="ERROR",
        auth="iam",
        throttle_rate=500,
        throttle_burst=1000,
        object_lock_mode="governance",
        object_lock_days=365,
        archive_expiration_days=None,
        access_log_expiration_days=365,
        deletion_protection=True,
        retain_data=True,
        iterator_age_alarm_seconds=300,
        audit_bytes_scanned_cutoff=2 * 1024**4,
        audit_results_expiration_days=30,
    ),
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "auth": ("iam", "cognito"),
    "object_lock_mode": ("governance", "compliance"),
    "packaging": ("zip", "image"),
}


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"context {name}={value!r}: expected true or false")


def from_context(scope: Construct) -> StageSettings:
    """The stage named by `-c stage=...`, with the per-deployment overrides applied."""
    node = scope.node
    name = str(node.try_get_context("stage") or "dev")
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; known: {', '.join(STAGES)}")
    overrides: dict[str, Any] = {}
    for key, allowed in _CHOICES.items():
        value = node.try_get_context(key)
        if value is not None:
            if value not in allowed:
                raise ValueError(f"context {key}={value!r}: expected one of {', '.join(allowed)}")
            overrides[key] = value
    email = node.try_get_context("alarm_email")
    if email:
        overrides["alarm_email"] = str(email)
    bundle = node.try_get_context("bundle_dependencies")
    if bundle is not None:
        overrides["bundle_dependencies"] = _as_bool("bundle_dependencies", bundle)
    return dataclasses.replace(STAGES[name], **overrides)
