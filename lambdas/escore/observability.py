"""One place for Powertools' logger, tracer and metrics, so every handler is observed alike.

Settings come from the standard Powertools variables (POWERTOOLS_SERVICE_NAME, POWERTOOLS_LOG_LEVEL,
POWERTOOLS_METRICS_NAMESPACE, POWERTOOLS_TRACE_DISABLED), set per function by CDK or the local runtime.

The tracer and metrics are made on first use: `Tracer()` imports the X-Ray SDK and patches botocore,
about 0.4 s of a 0.6 s cold start when done at import.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics, Tracer

logger = Logger()


@cache
def tracer() -> Tracer:
    from aws_lambda_powertools import Tracer

    return Tracer()


@cache
def metrics() -> Metrics:
    from aws_lambda_powertools import Metrics

    return Metrics(namespace="eventstack")
