"""One place for Powertools' logger, tracer and metrics, so every handler is observed alike.

Settings come from the standard Powertools variables (POWERTOOLS_SERVICE_NAME, POWERTOOLS_LOG_LEVEL,
POWERTOOLS_METRICS_NAMESPACE, POWERTOOLS_TRACE_DISABLED), set per function by CDK or the local runtime.

`observe(entry)` wraps a function's Lambda entry point (escore.runtime.lazy does it): structured logs
carry the invocation's context, X-Ray traces the invocation, and the metrics counted during it
(`count`) are flushed as CloudWatch EMF when it ends. Outside that entry point (tests, the local
runtime, which call `build(env)` handlers directly) `count` does nothing, so nothing accumulates
and nothing is printed.

The tracer and metrics are made on first use: `Tracer()` imports the X-Ray SDK and patches botocore,
about 0.4 s of a 0.6 s cold start when done at import.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics, Tracer

logger = Logger()
_observed: ContextVar[bool] = ContextVar("eventstack_observed", default=False)


@cache
def tracer() -> Tracer:
    from aws_lambda_powertools import Tracer

    return Tracer()


@cache
def metrics() -> Metrics:
    from aws_lambda_powertools import Metrics

    return Metrics(namespace="eventstack")


def count(name: str, value: float) -> None:
    """Add to a per-invocation count metric (flushed by `observe`); a no-op outside a Lambda entry."""
    if _observed.get() and value:
        from aws_lambda_powertools.metrics import MetricUnit

        metrics().add_metric(name=name, unit=MetricUnit.Count, value=value)


def observe(entry: Callable[[dict[str, Any], Any], Any]) -> Callable[[dict[str, Any], Any], Any]:
    """The Lambda entry point, with Powertools' logging context, tracing and metrics around it."""
    def handler(event: dict[str, Any], context: Any) -> Any:  # a plain function: the decorators need one
        return entry(event, context)

    wrapped = tracer().capture_lambda_handler(handler)
    wrapped = logger.inject_lambda_context(wrapped, clear_state=True)
    wrapped = metrics().log_metrics(wrapped, capture_cold_start_metric=True)

    def invoke(event: dict[str, Any], context: Any) -> Any:
        token = _observed.set(True)
        try:
            return wrapped(event, context)
        finally:
            _observed.reset(token)

    return invoke
