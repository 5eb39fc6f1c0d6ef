"""One place for Powertools' logger, tracer and metrics, so every handler is observed alike.

Settings come from the standard Powertools variables (POWERTOOLS_SERVICE_NAME, POWERTOOLS_LOG_LEVEL,
POWERTOOLS_METRICS_NAMESPACE, POWERTOOLS_TRACE_DISABLED), set per function by CDK or the local runtime.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace="eventstack")
