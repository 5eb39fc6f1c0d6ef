"""What every query engine over the archive offers (`eventstack query`, `trace`, `history`, the local UI).

Two implementations: DuckDB over a local cache of the archive's objects (eventstack.audit.duckdb_engine)
and Athena over the Glue table (eventstack.audit.athena_engine). Both expose the relations that
eventstack.sql describes (`events`, `events_raw`) under the same names and columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

EngineName = Literal["duckdb", "athena"]
ProgressFn = Callable[[str], None]  # one line of progress ("synced 12 objects", "RUNNING 3.2 s")


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]  # JSON-able values: str, int, float, bool, None
    stats: dict[str, Any] = field(default_factory=dict)  # engine's figures: seconds, bytes scanned, objects synced

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class QueryEngine(Protocol):
    name: EngineName

    def query(self, sql: str, params: dict[str, Any] | None = None, *, dialect: str | None = None,
              progress: ProgressFn | None = None) -> QueryResult:
        """Run `sql` (in `dialect`, default the engine's own; `$name` parameters from `params`) over
        the archive's relations."""
        ...

    def close(self) -> None: ...
