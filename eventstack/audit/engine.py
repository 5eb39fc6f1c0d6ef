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


class EngineError(RuntimeError):
    """The engine cannot run (no archive bucket, the runtime or AWS not reachable, an unreadable cache):
    the CLI says so in one line and exits 1. A query that cannot be read or fails as SQL is
    eventstack.sql.QueryError instead (exit 2)."""


def open_engine(name: EngineName = "duckdb", *, stage: str | None = None, cache_dir: str | None = None,
                found: Any = None) -> QueryEngine:
    """The engine `name` over `stage`'s archive (resources from eventstack.resources, or `found`).

    duckdb: the archive cache in `cache_dir` (default under the user's cache folder, one per
    endpoint or account and bucket), synced with the bucket at the first query.
    athena: the stage's workgroup and Glue database (escore.naming.audit_workgroup/audit_database).
    """
    import os

    from eventstack import resources

    found = found or resources.load(stage)
    if name == "athena":
        from eventstack.audit.athena_engine import AthenaEngine

        return AthenaEngine(resources.client("athena"), stage=found.stage, bucket=found.archive_bucket)
    if name != "duckdb":
        raise ValueError(f"no engine {name!r} (duckdb or athena)")
    from eventstack.audit.cache import ArchiveCache, default_root
    from eventstack.audit.duckdb_engine import DuckDBEngine

    root = cache_dir
    if root is None:
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            place = endpoint.split("://", 1)[-1].rstrip("/")
        else:
            place = str(resources.client("sts").get_caller_identity()["Account"]) + f"-{resources.region()}"
        root = str(default_root(found.archive_bucket, place))
    return DuckDBEngine(ArchiveCache(root), s3=resources.client("s3"), bucket=found.archive_bucket)
