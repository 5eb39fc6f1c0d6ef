"""How every handler module is wired (composition root per function).

Each handler module under lambdas/ exposes:
- `build(env: Mapping[str, str], **collaborators) -> Handler`: builds the handler from its
  configuration (its environment, parsed by a settings model of escore.settings). Tests and the
  local runtime call it with explicit settings and fakes; nothing is read from os.environ inside.
- `handler = lazy(build)`: the Lambda entry point; it builds from os.environ on the first
  invocation (not at import, so importing a module is cheap and side-effect free).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

Handler = Callable[[dict[str, Any], Any], Any]


class ConfigError(RuntimeError):
    """A function started without the configuration it needs (a deployment bug, not a client error)."""


def lazy(build: Callable[..., Handler]) -> Handler:
    """The Lambda entry point: built from os.environ on the first invocation, and observed
    (escore.observability: logging context, X-Ray, metrics flushed per invocation)."""
    built: list[Handler] = []

    def entry(event: dict[str, Any], context: Any) -> Any:
        if not built:
            from escore.observability import observe

            built.append(observe(build(os.environ)))
        return built[0](event, context)

    return entry


def aws_client(service: str, given: Any = None, *, config: Any = None) -> Any:
    """`given`, or a boto3 client for `service` (imported here, at first use, to keep imports cheap).

    The endpoint comes from the standard AWS_ENDPOINT_URL variable, which the local runtime sets.
    The region from AWS_REGION (what Lambda sets, and what the CLI documents), else boto3's own
    lookup (AWS_DEFAULT_REGION, the profile): boto3 alone ignores AWS_REGION.
    `config` is a botocore Config (the API's: `api_client_config()`).
    """
    if given is not None:
        return given
    import boto3

    return boto3.client(service, config=config, region_name=os.environ.get("AWS_REGION") or None)


# The API functions' AWS clients: a request answers within API Gateway's 29 s whatever DynamoDB does.
# botocore's defaults (60 s to read, several attempts) let one stalled call hang a request for over a
# minute; with these the worst is about 3 x (1 + 3) s plus back-off, then a 503 (escore.http).
API_CONNECT_TIMEOUT = 1.0
API_READ_TIMEOUT = 3.0
API_MAX_ATTEMPTS = 3  # the first try and two retries ("standard" mode: jittered back-off)


def api_client_config() -> Any:
    """The botocore Config of the API functions' clients (short timeouts, few attempts)."""
    from botocore.config import Config

    return Config(
        connect_timeout=API_CONNECT_TIMEOUT,
        read_timeout=API_READ_TIMEOUT,
        retries={"total_max_attempts": API_MAX_ATTEMPTS, "mode": "standard"},
    )
