"""The local query engine: DuckDB (embedded) over the archive cache (eventstack.audit.cache).

The first query syncs the cache with the bucket (new or changed objects only), converts each copy not
converted before to Parquet once (DuckDB's JSON reader; counting its lines and its undecodable ones,
and finding copies that are not gzip or are truncated: those are left out, named on stderr), then
binds `events_raw`/`events` as views over the Parquet copies (eventstack.audit.relations), `events`
over a de-duplicated Parquet copy made once per change of the cache, and runs the SQL. Undecodable lines are skipped, never silently: every
query says on stderr how many the objects it read hold.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from eventstack import sql as queries
from eventstack.audit import relations
from eventstack.audit.cache import ArchiveCache, CachedObject, SyncStats, rfc3339_to_naive_utc
from eventstack.audit.engine import EngineError, EngineName, ProgressFn, QueryResult
from eventstack.audit.output import plain

CONVERT_WORKERS = 4  # objects converted at once (each a DuckDB cursor)
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
        """Sync the cache (when a bucket is given), convert new copies, bind the relations."""
        if self.s3 is not None and self.bucket:
            self.sync_stats = _sync(self.cache, self.s3, self.bucket, progress)
        self._convert(progress)
        readable = [o for o in self.cache.objects() if o.unreadable is None]
        columnar = [str(self.cache.columnar_path(o.key)) for o in readable]
        relations.bind_duckdb(self.con, columnar)
        if readable:
            relations.bind_duckdb(self.con, columnar, self._events_copy(readable, progress))
        self._bound = True
        if progress:
            for o in self.cache.objects():
                if o.unreadable:
                    progress(f"warning: archive object {o.key} cannot be read ({o.unreadable}): left out")
            bad = sum(o.bad_lines or 0 for o in readable)
            holding = sum(1 for o in readable if o.bad_lines)
            if bad:
                progress(f"warning: {bad} archived line(s) in {holding} object(s) are not envelopes: skipped")

    def _events_copy(self, readable: list[CachedObject], progress: ProgressFn | None) -> str:
        """The Parquet copy of `events` for exactly these objects (by key and ETag): made when missing
        or when the objects changed, the de-duplication then paid once instead of at every query."""
        fingerprint = hashlib.sha256("\n".join(f"{o.key} {o.etag}" for o in readable).encode()).hexdigest()
        target = self.cache.root / "events.parquet"
        marker = self.cache.root / "events.parquet.objects"
        if target.is_file() and marker.is_file() and marker.read_text() == fingerprint:
            return str(target)
        import duckdb

        started = time.monotonic()
        part = target.with_name(f"{target.name}.{os.getpid()}.part")  # two CLIs on one cache never share one
        try:
            self.con.execute(relations.events_copy_sql(str(part)))
        except duckdb.Error as exc:
            part.unlink(missing_ok=True)
            raise EngineError(f"DuckDB: cannot de-duplicate the archive: {_first_line(exc)}") from None
        os.replace(part, target)
        marker.write_text(fingerprint)
        if progress:
            progress(f"de-duplicated {len(readable)} archive object(s) into events in {time.monotonic() - started:.1f} s")
        return str(target)

    def _convert(self, progress: ProgressFn | None) -> None:
        """Copy every object not yet converted to Parquet (relations.columnar_sql), counting its lines and
        undecodable lines; an object DuckDB cannot read (not gzip, truncated) is marked and left out."""
        fresh = [o for o in self.cache.objects()
                 if o.unreadable is None and (o.lines is None or not self.cache.columnar_path(o.key).is_file())]
        if not fresh:
            return
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=CONVERT_WORKERS) as pool:
            list(pool.map(self._convert_one, fresh))
        self.cache.save()
        if progress:
            progress(f"read {len(fresh)} new archive object(s) in {time.monotonic() - started:.1f} s")

    def _convert_one(self, entry: CachedObject) -> None:
        import duckdb

        target = self.cache.columnar_path(entry.key)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f"{target.name}.{os.getpid()}.part")  # two CLIs on one cache never share one
        bad = " OR ".join(f"{name} IS NULL" for name in relations.IDENTIFYING)
        cursor = self.con.cursor()  # one per thread: DuckDB runs them in parallel
        try:
            cursor.execute(relations.columnar_sql(str(self.cache.path(entry.key)), entry.key,
                                                  rfc3339_to_naive_utc(entry.last_modified), str(part)))
            lines, bad_lines = cursor.execute(
                f"SELECT count(*), count(*) FILTER (WHERE {bad}) FROM read_parquet({queries.literal(str(part))}, hive_partitioning = false)"
            ).fetchone() or (0, 0)
            os.replace(part, target)
            self.cache.record(entry.key, lines=int(lines), bad_lines=int(bad_lines))
        except duckdb.Error as exc:
            part.unlink(missing_ok=True)
            self.cache.record(entry.key, unreadable=_first_line(exc))
        finally:
            cursor.close()

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
