"""The local query engine: DuckDB (embedded) over the archive cache (eventstack.audit.cache).

The first query syncs the cache with the bucket (new or changed objects only), reads each copy not
read before once to count its lines and its undecodable ones (and to find copies that are not gzip or
are truncated: those are left out, named on stderr), then binds `events_raw`/`events` as views
(eventstack.audit.relations) and runs the SQL. Undecodable lines are skipped, never silently: every
query says on stderr how many the objects it read hold.
"""

from __future__ import annotations

import re
import time
from typing import Any

from eventstack import sql as queries
from eventstack.audit import relations
from eventstack.audit.cache import ArchiveCache, SyncStats, rfc3339_to_naive_utc
from eventstack.audit.engine import EngineError, EngineName, ProgressFn, QueryResult
from eventstack.audit.output import plain

INSPECT_BATCH = 256  # copies counted per DuckDB scan when looking at new objects
PARAMETER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


class DuckDBEngine:
    name: EngineName = "duckdb"

    def __init__(self, cache: ArchiveCache, *, s3: Any = None, bucket: str | None = None) -> None:
        """`s3`/`bucket`: where to sync from (None: query the cache as it is)."""
        import duckdb

        self.cache = cache
        self.s3 = s3
        self.bucket = bucket
        self.con = duckdb.connect()
        self.sync_stats: SyncStats | None = None
        self._bound = False

    def refresh(self, progress: ProgressFn | None = None) -> None:
        """Sync the cache (when a bucket is given), read new copies, bind the relations."""
        if self.s3 is not None and self.bucket:
            self.sync_stats = _sync(self.cache, self.s3, self.bucket, progress)
        self._inspect()
        readable = [o for o in self.cache.objects() if o.unreadable is None]
        relations.bind_duckdb(self.con, [(str(self.cache.path(o.key)), o.key, rfc3339_to_naive_utc(o.last_modified))
                                         for o in readable])
        self._bound = True
        if progress:
            for o in self.cache.objects():
                if o.unreadable:
                    progress(f"warning: archive object {o.key} cannot be read ({o.unreadable}): left out")
            bad = sum(o.bad_lines or 0 for o in readable)
            holding = sum(1 for o in readable if o.bad_lines)
            if bad:
                progress(f"warning: {bad} archived line(s) in {holding} object(s) are not envelopes: skipped")

    def _inspect(self) -> None:
        """Count lines and undecodable lines of every copy not yet read; mark copies DuckDB cannot read."""
        fresh = [o for o in self.cache.objects() if o.lines is None and o.unreadable is None]
        if not fresh:
            return
        for start in range(0, len(fresh), INSPECT_BATCH):
            batch = fresh[start:start + INSPECT_BATCH]
            try:
                self._count([o.key for o in batch])
            except EngineError:
                for one in batch:  # one bad copy fails the scan: find it
                    try:
                        self._count([one.key])
                    except EngineError as exc:
                        self.cache.record(one.key, unreadable=str(exc).splitlines()[0])
        self.cache.save()

    def _count(self, keys: list[str]) -> None:
        import duckdb

        paths = {str(self.cache.path(k)): k for k in keys}
        bad = " OR ".join(f"{name} IS NULL" for name in relations.IDENTIFYING)
        sql = (f"SELECT {relations.FILE_COLUMN}, count(*), count(*) FILTER (WHERE {bad}) "
               f"FROM {relations.read_json_sql(list(paths))} GROUP BY ALL")
        try:
            found = {row[0]: row for row in self.con.execute(sql).fetchall()}
        except duckdb.Error as exc:
            raise EngineError(str(exc)) from None
        for path, key in paths.items():
            row = found.get(path)
            self.cache.record(key, lines=int(row[1]) if row else 0, bad_lines=int(row[2]) if row else 0)

    def query(self, sql: str, params: dict[str, Any] | None = None, *, dialect: str | None = None,
              progress: ProgressFn | None = None) -> QueryResult:
        import duckdb

        if not self._bound:
            self.refresh(progress)
        text = queries.transpile(sql, read=dialect or "duckdb", write="duckdb")  # type: ignore[arg-type]
        started = time.monotonic()
        try:
            named = set(PARAMETER.findall(text))  # DuckDB refuses values the statement does not name
            cursor = self.con.execute(text, {k: v for k, v in (params or {}).items() if k in named})
            columns = [d[0] for d in cursor.description or []]
            rows = [tuple(plain(v) for v in row) for row in cursor.fetchall()]
        except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException,
                duckdb.ConversionException, duckdb.InvalidInputException, duckdb.NotImplementedException,
                duckdb.OutOfRangeException, duckdb.InvalidTypeException, duckdb.TypeMismatchException) as exc:
            raise queries.QueryError(_first_line(exc)) from None
        except duckdb.Error as exc:
            raise EngineError(f"DuckDB: {_first_line(exc)}") from None
        stats: dict[str, Any] = {"seconds": round(time.monotonic() - started, 3),
                                 "objects": len(self.cache.entries)}
        if self.sync_stats:
            stats["objects_downloaded"] = self.sync_stats.downloaded
        return QueryResult(columns, rows, stats)

    def close(self) -> None:
        self.con.close()


def _sync(cache: ArchiveCache, s3: Any, bucket: str, progress: ProgressFn | None) -> SyncStats:
    from botocore.exceptions import ClientError

    try:
        return cache.sync(s3, bucket, progress=progress)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404"):
            raise EngineError(f"no archive bucket {bucket!r} (is the stage deployed, or the local runtime running?)") from None
        raise EngineError(f"cannot read the archive bucket {bucket!r}: {exc}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.split("\n")[:1]) if text else type(exc).__name__
