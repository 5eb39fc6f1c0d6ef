"""The Lambda functions: each built from its handler module with its own environment.

Several functions share one process here, so `os.environ` cannot differ between them: each is
built with `module.build(env_of_that_function)` (docs/architecture.md). Like Lambda, a function
runs one invocation per instance at a time; concurrent invocations get more instances, each built
on first use (a cold start), then reused. In process, an instance is an object; a function given
a `remote` invoker (the API functions, eventstack.local.workers) runs its instances in worker
processes instead, and this only counts its invocations and cold starts.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eventstack.loader import ensure_lambdas_importable, load_builder
from eventstack.local.plan import FunctionPlan

Handler = Callable[[dict[str, Any], Any], Any]
# (function name, event) -> (result, whether the invocation was a cold start)
RemoteInvoker = Callable[[str, dict[str, Any]], tuple[Any, bool]]
def load_build(path: str) -> Callable[..., Handler]:
    """`package.module:attribute` -> that build function (a test's handler for a worker process)."""
    module_name, _, attribute = path.partition(":")
    ensure_lambdas_importable()
    build = getattr(importlib.import_module(module_name), attribute or "build", None)
    if not callable(build):
        raise RuntimeError(f"{path} is not a build function")
    return build  # type: ignore[no-any-return]


def powertools_environment(log_level: str) -> dict[str, str]:
    """Powertools' settings for the handlers here: quiet unless --log-level debug. Its Logger reads them
    when it is made, at the import of a handler module (escore.observability)."""
    quiet = log_level.upper() != "DEBUG"
    return {
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "eventstack",
        "POWERTOOLS_METRICS_DISABLED": "true" if quiet else "false",
        "POWERTOOLS_LOG_LEVEL": "WARNING" if quiet else "DEBUG",
    }


def process_environment(endpoint_url: str, log_level: str) -> dict[str, str]:
    """What the process needs so every handler's plain boto3.client(...) reaches the emulation."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
        **powertools_environment(log_level),
    }


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    function_name: str
    aws_request_id: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"
    timeout_seconds: float = 30.0
    started: float = 0.0

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self.started)) * 1000))


class Function:
    """One function: a pool of built handler instances."""

    def __init__(self, plan: FunctionPlan, builder: Callable[..., Handler] | None = None,
                 collaborators: Mapping[str, Any] | None = None, remote: RemoteInvoker | None = None):
        self.plan = plan
        self.name = plan.name
        self._builder = builder
        self._collaborators = dict(collaborators or {})
        self._idle: list[Handler] = []
        self._lock = threading.Lock()
        self.remote = remote
        self.invocations = 0
        self.cold_starts = 0

    def _acquire(self) -> Handler:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            self.cold_starts += 1
        if self._builder is None:
            self._builder = load_builder(self.plan.handler)
        return self._builder(self.plan.env, **self._collaborators)

    def invoke(self, event: dict[str, Any]) -> Any:
        if self.remote is not None:
            with self._lock:
                self.invocations += 1
            result, cold = self.remote(self.name, event)
            if cold:
                with self._lock:
                    self.cold_starts += 1
            return result
        instance = self._acquire()
        context = LambdaContext(
            function_name=self.name,
            aws_request_id=str(uuid.uuid4()),
            invoked_function_arn=self.plan.arn,
            log_group_name=f"/aws/lambda/{self.name}",
            started=time.monotonic(),
        )
        with self._lock:
            self.invocations += 1
        try:
            return instance(event, context)
        finally:
            with self._lock:
                self._idle.append(instance)


class FunctionRegistry:
    def __init__(self, plans: tuple[FunctionPlan, ...], overrides: Mapping[str, Callable[..., Handler]] | None = None,
                 remote: Mapping[str, RemoteInvoker] | None = None):
        """`overrides`: a build function by function name, in process; `remote`: an invoker by function
        name, for the functions that run elsewhere (in worker processes)."""
        overrides, remote = overrides or {}, remote or {}
        self.functions = {p.name: Function(p, overrides.get(p.name), remote=remote.get(p.name)) for p in plans}

    def __getitem__(self, name: str) -> Function:
        return self.functions[name]

    def preload(self) -> list[str]:
        """Import every handler module now, so a missing module fails at start-up, not on first use."""
        problems = []
        for function in self.functions.values():
            if function._builder is None:
                try:
                    function._builder = load_builder(function.plan.handler)
                except Exception as exc:
                    problems.append(f"{function.name}: cannot load {function.plan.handler}: {exc}")
        return problems


def apply_process_environment(env: Mapping[str, str]) -> dict[str, str | None]:
    """Set the variables; return what they were, so a test can put them back."""
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    return previous


def restore_process_environment(previous: Mapping[str, str | None]) -> None:
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
