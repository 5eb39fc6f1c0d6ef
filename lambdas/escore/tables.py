"""Which physical table a projection's readers and its live projector use right now.

`eventstack replay PROJECTION --into new` builds a fresh table and, only once it is complete,
switches the projection to it by writing the table's name into an SSM parameter, the projection's
*active-table pointer*. Everything that touches a projection table (its projector, the API that
reads it) resolves the name through `TableResolver` instead of reading `<NAME>_TABLE` directly:

- `<NAME>_TABLE_PARAMETER` (optional): the pointer's parameter name, e.g.
  `/eventstack/dev/projections/user_timeline/table` (see `table_parameter_name`).
- `<NAME>_TABLE`: the table the projection started with; used while no pointer is set (or when the
  pointer variable is absent, as in unit tests), so nothing changes until a first `--into new`.

The answer is cached for `TABLE_CACHE_SECONDS`: one SSM call per function instance per window.
Replay keeps tailing the live stream into the new table for longer than that window after the
switch, so a projector that still writes to the old table for a few seconds loses nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from escore.runtime import aws_client

TABLE_CACHE_SECONDS = 15.0
PARAMETER_ROOT = "/eventstack"


class TableNotConfigured(RuntimeError):
    """Neither a pointer nor the `<NAME>_TABLE` variable names the table (a deployment bug)."""


def table_env(logical_name: str) -> str:
    """The variable with the projection's initial table, e.g. USER_TIMELINE_TABLE (as topology)."""
    return f"{logical_name.upper()}_TABLE"


def table_parameter_env(logical_name: str) -> str:
    """The variable with the pointer's parameter name, e.g. USER_TIMELINE_TABLE_PARAMETER."""
    return f"{table_env(logical_name)}_PARAMETER"


def table_parameter_name(stage: str, logical_name: str) -> str:
    """The active-table pointer of a projection, e.g. /eventstack/dev/projections/user_timeline/table."""
    return f"{PARAMETER_ROOT}/{stage}/projections/{logical_name}/table"


class TableResolver:
    """Resolves a projection's active table, cached; thread-safe; one per function instance."""

    def __init__(
        self,
        env: Mapping[str, str],
        logical_name: str,
        *,
        ssm_client: Any = None,
        cache_seconds: float = TABLE_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logical_name = logical_name
        self.fallback = env.get(table_env(logical_name)) or None
        self.parameter = env.get(table_parameter_env(logical_name)) or None
        if self.fallback is None and self.parameter is None:
            raise TableNotConfigured(
                f"set {table_env(logical_name)} (and optionally {table_parameter_env(logical_name)})"
            )
        self._ssm = ssm_client
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._value: str | None = None
        self._expires = float("-inf")

    def __call__(self) -> str:
        if self.parameter is None:
            assert self.fallback is not None
            return self.fallback
        with self._lock:
            now = self._clock()
            if self._value is None or now >= self._expires:
                self._value = self._lookup(self._value)
                self._expires = now + self._cache_seconds
            return self._value

    def invalidate(self) -> None:
        with self._lock:
            self._expires = float("-inf")

    def _lookup(self, stale: str | None) -> str:
        assert self.parameter is not None
        if self._ssm is None:
            self._ssm = aws_client("ssm")
        try:
            answer = self._ssm.get_parameter(Name=self.parameter)
        except Exception as exc:
            if _is_not_found(exc):
                if self.fallback is None:
                    raise TableNotConfigured(
                        f"no pointer {self.parameter} and no {table_env(self.logical_name)}"
                    ) from exc
                return self.fallback
            # SSM unavailable or throttled: a stale answer is right (pointers change rarely and
            # replay's hand-off window covers it); with none, fail so the batch or request is retried
            # rather than guessing the initial table, which may be the retired one.
            if stale is not None:
                return stale
            raise
        value = answer["Parameter"]["Value"]
        return str(value)


def _is_not_found(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return bool(code == "ParameterNotFound")
    return False


_shared: dict[tuple[str, str | None, str | None], TableResolver] = {}
_shared_lock = threading.Lock()


def resolve_table(
    env: Mapping[str, str],
    logical_name: str,
    *,
    ssm_client: Any = None,
    cache_seconds: float = TABLE_CACHE_SECONDS,
) -> str:
    """The projection's active table name now (cached per pointer); see the module's docstring."""
    key = (logical_name, env.get(table_env(logical_name)), env.get(table_parameter_env(logical_name)))
    with _shared_lock:
        resolver = _shared.get(key)
        if resolver is None:
            resolver = TableResolver(env, logical_name, ssm_client=ssm_client, cache_seconds=cache_seconds)
            _shared[key] = resolver
    return resolver()
