"""`eventstack query` on DuckDB over a 1,000,000-event archive: seconds to sync and per query.

The archive is bench.replay's (`generate()`: the same mix of types, about 5% delivered twice, the same
key layout), uploaded to moto's S3 in this process, then synced into an archive cache with the
engine's own `ArchiveCache.sync` (boto3, concurrent downloads) and queried with `DuckDBEngine`:

- sync, cold (every object downloaded), and again with nothing changed (the ETag check alone);
- the first query's one-time work: every new copy to Parquet (line and undecodable-line counts),
  then `events` de-duplicated once into its own Parquet copy;
- count(DISTINCT event_id) over `events`; a GROUP BY type over `events`; one correlation id's
  events (`metadata->>'correlation_id'`); one stream's history in version order; the GROUP BY over
  `events_raw` (the per-object Parquet copies, not de-duplicated).

Each query runs `--repeat` times (default 3) on the same warm engine; the table gives the median and
the fastest. Writes bench/results/query.json and bench/results/query.md.
Run: `.venv/bin/python -m bench.query [--events N]`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lambdas"))

import orjson

from bench.replay import generate

RESULTS = Path(__file__).resolve().parent / "results"
BUCKET = "eventstack-bench-archive"
QUERIES = {
    "count_distinct": "SELECT count(DISTINCT event_id) AS n FROM events",
    "group_by_type": "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY n DESC",
    "by_correlation_id": "SELECT * FROM events WHERE metadata->>'correlation_id' = $correlation_id",
    "stream_history": "SELECT version, type, occurred_at, data FROM events WHERE stream_id = $stream_id ORDER BY version",
    "raw_group_by_type": "SELECT type, count(*) AS n FROM events_raw GROUP BY type ORDER BY n DESC",
}
# The same four queries when every query read the gzip objects with read_json and de-duplicated with
# the window of events.sql (commit 777bc3e, the same machine, median of 3): the design this replaced.
JSON_READER_SECONDS = {"count_distinct": 8.01, "group_by_type": 4.21, "by_correlation_id": 6.25, "stream_history": 7.05}


def upload(s3: Any, root: Path) -> int:
    count = 0
    for path in sorted(root.rglob("*.gz")):
        s3.put_object(Bucket=BUCKET, Key=path.relative_to(root).as_posix(), Body=path.read_bytes())
        count += 1
    return count


def sample(root: Path) -> dict[str, str]:
    """A correlation id and a stream with several events, from one object of the archive."""
    path = sorted(root.rglob("*posts*.gz"))[len(list(root.rglob("*posts*.gz"))) // 2]
    lines = [orjson.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines() if line]
    edited = next(e for e in lines if e["type"] == "PostEdited")
    return {"correlation_id": lines[len(lines) // 2]["metadata"]["correlation_id"], "stream_id": edited["stream_id"]}


def timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def run(events: int, repeat: int) -> dict[str, Any]:
    import boto3
    from moto import mock_aws

    from eventstack.audit.cache import ArchiveCache
    from eventstack.audit.duckdb_engine import DuckDBEngine

    with tempfile.TemporaryDirectory(prefix="eventstack-bench-query-") as tmp, mock_aws():
        root, cache_dir = Path(tmp) / "archive", Path(tmp) / "cache"
        seconds, archive = timed(lambda: generate(root, events))
        archive["generate_seconds"] = seconds
        print(f"archive: {archive['lines']:,} lines in {archive['objects']} objects, "
              f"{archive['gzip_bytes'] / 1e6:.1f} MB gzip ({seconds:.0f} s)", flush=True)
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        upload_seconds, _ = timed(lambda: upload(s3, root))
        params = sample(root)

        cold = ArchiveCache(cache_dir).sync(s3, BUCKET)
        warm = ArchiveCache(cache_dir).sync(s3, BUCKET)
        print(f"sync cold {cold.seconds:.1f} s ({cold.downloaded} objects), unchanged {warm.seconds:.2f} s", flush=True)
        engine = DuckDBEngine(ArchiveCache(cache_dir))  # the cache as synced: no bucket to sync from
        said: list[str] = []
        inspect_seconds, _ = timed(lambda: engine.refresh(said.append))
        results: dict[str, Any] = {}
        for name, sql in QUERIES.items():
            runs, rows = [], 0
            for _ in range(repeat):
                seconds, result = timed(lambda sql=sql: engine.query(sql, params))
                runs.append(seconds)
                rows = len(result.rows)
            results[name] = {"sql": sql, "seconds": runs, "median": statistics.median(runs), "fastest": min(runs),
                             "rows": rows}
            print(f"{name}: median {results[name]['median']:.2f} s, fastest {min(runs):.2f} s, {rows} row(s)", flush=True)
        check = engine.query(QUERIES["count_distinct"]).rows[0][0]
        engine.close()
    assert check == events, f"count(DISTINCT event_id) = {check}, generated {events}"
    return {
        "benchmark": "query",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "duckdb": _version("duckdb"), "load_average": list(os.getloadavg())},
        "source": "moto S3 in process (mock_aws); the cache synced from it with ArchiveCache.sync",
        "archive": archive,
        "upload_seconds": upload_seconds,
        "sync": {"cold_seconds": cold.seconds, "cold_objects": cold.downloaded, "cold_bytes": cold.bytes,
                 "unchanged_seconds": warm.seconds, "unchanged_downloaded": warm.downloaded},
        "first_read_seconds": inspect_seconds,
        "first_read_lines": said,
        "params": params,
        "queries": results,
        "count_distinct_event_id": check,
    }


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def markdown(result: dict[str, Any]) -> str:
    archive, sync, machine = result["archive"], result["sync"], result["machine"]
    rows = "".join(f"| {name} | `{q['sql']}` | {q['median']:.3f} | {q['fastest']:.3f} | {q['rows']:,} | "
                   f"{JSON_READER_SECONDS.get(name, '')} |\n"
                   for name, q in result["queries"].items())
    load = ", ".join(f"{x:.1f}" for x in machine["load_average"])
    first = "; ".join(result["first_read_lines"])
    return (
        "# Query benchmark (DuckDB engine)\n\n"
        f"Measured {result['measured_at']} on {machine['cpus']} CPUs (load average {load} at the end, the machine "
        f"shared with other work), Python {machine['python']}, DuckDB {machine['duckdb']}, `python -m bench.query` "
        "(one run).\n\n"
        f"Archive: bench.replay's generator, {archive['unique_events']:,} unique events + {archive['duplicates']:,} "
        f"duplicates = {archive['lines']:,} lines in {archive['objects']} gzip JSON Lines objects "
        f"({archive['gzip_bytes'] / 1e6:.1f} MB), {archive['streams']:,} streams. Source: {result['source']}.\n\n"
        f"Sync: cold {sync['cold_seconds']:.1f} s ({sync['cold_objects']} objects, {sync['cold_bytes'] / 1e6:.1f} MB); "
        f"again with nothing changed {sync['unchanged_seconds']:.2f} s ({sync['unchanged_downloaded']} downloaded). "
        f"First query's one-time work: {result['first_read_seconds']:.1f} s ({first}).\n\n"
        "| query | SQL | median s | fastest s | rows | before: read_json at every query, median s |\n"
        "|---|---|---:|---:|---:|---:|\n" + rows +
        f"\ncount(DISTINCT event_id) over events = {result['count_distinct_event_id']:,} (the generated unique events). "
        "Queries read Parquet copies the engine makes once per object (events_raw) and once per change of the "
        "cache (events, de-duplicated, in stream order). The last column is the design this replaced (commit "
        "777bc3e: read_json over the gzip objects and the window of events.sql at every query), measured the same "
        "way on the same machine (bench.replay's generator has changed since: that archive was 1,050,024 lines, "
        "95.0 MB).\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="unique events to generate")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each query")
    args = parser.parse_args()
    result = run(args.events, args.repeat)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "query.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "query.md").write_text(markdown(result))
    print(f"results in {RESULTS}/query.json and query.md")


if __name__ == "__main__":
    main()
