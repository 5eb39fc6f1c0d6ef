"""Event source mapping settings, translated from the topology's `MappingSettings`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources

from eventstack.topology import MappingSettings
from infra.dead_letters import FailureQueue
from infra.functions import ServiceFunction


def options(settings: MappingSettings, on_failure: FailureQueue) -> dict[str, Any]:
    if not 0 <= settings.max_retries <= 10:
        raise ValueError(f"max_retries must be 0..10 (never -1, infinite), got {settings.max_retries}")
    return {
        "starting_position": lambda_.StartingPosition[settings.starting_position],
        "batch_size": settings.batch_size,
        "max_batching_window": Duration.seconds(settings.batching_window_seconds),
        "bisect_batch_on_error": settings.bisect_on_error,
        "retry_attempts": settings.max_retries,
        "max_record_age": Duration.seconds(settings.max_record_age_seconds),
        "parallelization_factor": settings.parallelization_factor,
        "report_batch_item_failures": settings.report_batch_item_failures,
        "on_failure": sources.SqsDlq(on_failure.queue),
    }


@dataclass(frozen=True)
class Mapping:
    """One stream mapping, for monitoring and for the topology test."""

    name: str  # e.g. "posts-publisher", "user_profiles-from-posts"
    source: str  # the service whose stream (or event store) feeds it
    function: ServiceFunction
    failure_queue: FailureQueue
