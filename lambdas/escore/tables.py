"""Which physical table a projection's readers and its live projector use right now.

`eventstack replay PROJECTION --into new` builds a fresh table and, only once it is complete,
switches the projection to it by writing the table's name into an SSM parameter, the projection's
*active-table pointer*. Everything that touches a projection table (its projector, the API that
reads it) resolves the name through `TableResolver`, from the function's `ProjectionTable`
settings (escore.settings; the names in escore.naming):

- `<NAME>_TABLE_PARAMETER` (optional): the pointer's parameter name, e.g.
  `/eventstack/dev/projections/user_timeline/table` (`naming.table_parameter`).
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

from escore import naming
from escore.runtime import aws_client
from escore.settings import ProjectionTable, TableNotConfigured

TABLE_CACHE_SECONDS = 15.0

__all__ = ["TABLE_CACHE_SECONDS", "TableNotConfigured", "TableResolver"]


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
        settings = ProjectionTable.of(env, logical_name)  # TableNotConfigured when neither is set
        self.logical_name = logical_name
        self.fallback = settings.table
        self.parameter = settings.table_parameter
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
                        f"no pointer {self.parameter} and no {naming.table_env(self.logical_name)}"
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
