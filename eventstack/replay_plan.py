"""The local engine's plan step: DuckDB de-duplicates, buckets and orders the window's events into files.

`build_plan` (for `eventstack replay --engine local`, docs/replay.md "The plan"):

1. The window's archive objects (the record's listing: `max_keys`, `since`/`until`) are downloaded
   concurrently into a temporary directory, each under its own key, so the local paths sort as the
   keys do (no httpfs extension: DuckDB reads local files). The stream records up to the cuts, read
   from Kinesis once here (the workers need no Kinesis reads), go into one more file, each line
   `<stream>/<shard>/<position>` \\x01 `<the record's data>`; a record that is not an envelope is
   counted and named (`summary.bad_record`) and left out, as before.
2. DuckDB reads every line whole (read_csv with the delimiter \\x01, which compact JSON never contains:
   it is escaped inside strings) into one table `plan_lines(line, origin, archive_key)` and runs
   eventstack/sql/replay_plan.sql over it (the query the AWS engine runs on Athena), COPYing each
   bucket to gzip files `bucket=<k>/data_0.csv.gz` (one column, no quoting: the lines exactly as
   archived); replay_plan_check.sql names the lines that are not envelopes.
3. The files and `manifest.json` (escore.replay_file.PlanItem per bucket, keys named as under
   `escore.naming.replay_plan_prefix(projection, run)`) stay in the temporary directory, read by this
   process's workers, and are removed when the fold ends. Not uploaded: the archive bucket is
   Object-Locked (every plan file would be kept for the lock period), and a resumed run plans again
   from the same objects and cuts, which gives the same files (the done markers skip finished ones).

An object DuckDB cannot read (not gzip, truncated) fails the query; the objects are then checked
one by one, each bad one named (`summary.problems`, which blocks the switch), the lines it gave
before the damage kept, and the query run again.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from escore import naming
from escore.engine import position_of
from escore.envelope import EnvelopeError, decode
from escore.projector_lambda import namespace
from escore.replay_file import PlanItem
from eventstack import sql
from eventstack.archive_gzip import iter_lines
from eventstack.archive_layout import ArchiveError, ArchiveObject
from eventstack.replay_streams import read_to_cut, shards_parents_first

if TYPE_CHECKING:
    from eventstack.replay import Replayer

MANIFEST = "manifest.json"
STREAM_FILE = "stream-records.gz"
ORIGINS_FILE = "origins.gz"
_DELIMITER = "\x01"
# Sizing a file so that one Lambda (15 minutes) folds and writes it with room to spare:
FOLD_EVENTS_PER_SECOND = 70_000  # one worker's fold alone, bench/results/replay.json (user_profiles)
ITEM_WRITES_PER_SECOND = 400  # 4 concurrent conditional writes of about 10 ms each (assumed DynamoDB latency)
ITEMS_PER_EVENT = 0.4  # the bench archive: 400,000 items of user_profiles and user_timeline for 1M events
LAMBDA_BUDGET_SECONDS = 600  # of the 900 s limit
GZ_BYTES_PER_EVENT = 106  # the bench archive: 111 MB of gzip for 1.05 M lines
EVENTS_PER_FILE = int(LAMBDA_BUDGET_SECONDS / (1 / FOLD_EVENTS_PER_SECOND + ITEMS_PER_EVENT / ITEM_WRITES_PER_SECOND))


def default_files(compressed_bytes: int, workers: int) -> int:
    """The bucket count: at least `workers`, and enough that one file (EVENTS_PER_FILE, about 590,000
    events) is folded and written within LAMBDA_BUDGET_SECONDS."""
    events = compressed_bytes / GZ_BYTES_PER_EVENT
    return max(1, workers, math.ceil(events / EVENTS_PER_FILE))


@dataclass
class Plan:
    """A plan made (or found): its items, where its local files are, and what making it counted."""

    items: list[PlanItem]
    prefix: str
    local_dir: Path | None = None
    lines: int = 0  # archive lines and stream records read (duplicates included)
    archive_lines: int = 0
    unique: int = 0  # events in the plan
    objects: int = 0
    compressed_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def plan_prefix(record: dict[str, Any]) -> str:
    return naming.replay_plan_prefix(record["projection"], record["table"] + "-" + _stamp(record["started_at"]))


def _stamp(started_at: str) -> str:
    return "".join(ch for ch in started_at if ch.isdigit())[:14]


def remove(plan: Plan) -> None:
    """Delete the plan's local files."""
    if plan.local_dir is not None:
        shutil.rmtree(plan.local_dir.parent, ignore_errors=True)


def objects_of(replayer: Replayer, record: dict[str, Any]) -> list[ArchiveObject]:
    """The archive objects of the record's window, as the scan engine's worker lists them."""
    since = datetime.fromisoformat(record["since"]) if record["since"] else None
    until = datetime.fromisoformat(record["until"]) if record["until"] else None
    reader = replayer._reader()
    objects: list[ArchiveObject] = []
    for service in replayer.projection.sources:
        max_key = record["max_keys"].get(service)
        if max_key is not None:
            objects += reader.list(service, since, until, max_key=max_key)
    return objects


def build_plan(replayer: Replayer, record: dict[str, Any], cuts: dict[str, dict[str, str]], files: int,
               work_dir: Path | None = None) -> Plan:
    """Make the plan (see the module's docstring): local files and their manifest."""
    r, prefix = replayer, plan_prefix(record)
    root = Path(tempfile.mkdtemp(prefix="eventstack-plan-", dir=work_dir))
    plan = Plan([], prefix, local_dir=root / "plan")
    timer = time.perf_counter()
    objects = objects_of(r, record)
    plan.objects, plan.compressed_bytes = len(objects), sum(o.size for o in objects)
    r.progress.phase("reading archive", len(objects))
    archive_dir = root / "archive"
    paths = _download(r, objects, archive_dir)
    plan.seconds["download"] = time.perf_counter() - timer
    timer = time.perf_counter()
    r.progress.phase("reading the streams up to the cut", None)
    stream_file, origins_file = root / STREAM_FILE, root / ORIGINS_FILE
    records = _stream_records(r, cuts, stream_file, origins_file if files == 1 else None)
    plan.seconds["streams"] = time.perf_counter() - timer
    r.hooks("stream-read")

    timer = time.perf_counter()
    r.progress.phase("planning (DuckDB)", None)
    assert plan.local_dir is not None
    plan_files(plan, paths, stream_file if records else None, files, plan.local_dir, archive_root=archive_dir)
    shutil.rmtree(archive_dir, ignore_errors=True)
    plan.seconds["plan"] = time.perf_counter() - timer

    origins_key = prefix + ORIGINS_FILE if files == 1 and records else None
    keys: dict[int, list[str]] = {}
    for path in sorted(plan.local_dir.glob("bucket=*/*")):
        keys.setdefault(int(path.parent.name.partition("=")[2]), []).append(f"{prefix}{path.parent.name}/{path.name}")
    plan.items = [PlanItem(projection=r.projection.name, folds=r.projection.folds, stage=r.resources.stage,
                           table=record["table"], bucket=r.resources.archive_bucket, keys=keys.get(k, []),
                           index=k, count=files, cuts=cuts, require_start=record["since"] is None,
                           origins=origins_key) for k in range(files)]
    (root / MANIFEST).write_bytes(orjson.dumps([item.model_dump() for item in plan.items]))
    return plan


def plan_files(plan: Plan, paths: list[Path], stream_file: Path | None, files: int, out_dir: Path,
               *, archive_root: Path | None = None, threads: int | None = None) -> None:
    """The DuckDB part: the lines of `paths` (archive objects, in key order) and `stream_file` into
    `files` bucket files under `out_dir` (replay_plan.sql); counts and problems into `plan`."""
    import duckdb

    connection = duckdb.connect()
    with contextlib.closing(connection):
        if threads:
            connection.execute(f"SET threads = {int(threads)}")
        while True:
            try:
                _load_lines(connection, paths, stream_file)
                break
            except duckdb.Error as exc:
                bad = _repair(paths)
                if not bad:
                    raise ArchiveError(f"the plan query failed: {exc}") from None
                plan.problems.append(f"{len(bad)} unreadable object(s): {', '.join(bad[:3])}")
        (total, archive_lines), = connection.execute(
            "SELECT count(*), count(*) FILTER (WHERE origin = 0) FROM plan_lines").fetchall()
        plan.lines, plan.archive_lines = int(total), int(archive_lines)
        check = connection.execute(sql.render(sql.source("replay_plan_check"), {"limit": 3})).fetchall()
        if check:
            (bad_lines,), = connection.execute(
                "SELECT count(*) FROM plan_lines WHERE TRY(json_extract_string(line, '$.event_id')) IS NULL "
                "OR TRY(json_extract_string(line, '$.stream_id')) IS NULL "
                "OR TRY_CAST(TRY(json_extract_string(line, '$.version')) AS BIGINT) IS NULL").fetchall()
            samples = "; ".join(f"{_origin_name(origin, key, archive_root)}: {line[:80]}"
                                for origin, key, line in check)
            plan.problems.append(f"{bad_lines} line(s) that are not envelopes: {samples}")
        query = sql.render(sql.source("replay_plan"), {"buckets": files})
        # Materialized in the query's order, then one COPY per bucket: a scan keeps insertion order
        # (a partitioned COPY writes in parallel and does not), and the table's zone maps on `bucket`
        # let each COPY read only its own row groups.
        connection.execute(f"CREATE TABLE planned AS {query}")
        connection.execute("DROP TABLE plan_lines")
        plan.unique = 0
        for (bucket,) in connection.execute("SELECT DISTINCT bucket FROM planned ORDER BY bucket").fetchall():
            target = out_dir / f"bucket={int(bucket)}"
            target.mkdir(parents=True, exist_ok=True)
            (written,), = connection.execute(
                f"COPY (SELECT line FROM planned WHERE bucket = {int(bucket)}) TO '{target / 'data_0.csv.gz'}' "
                f"(FORMAT csv, DELIMITER '{_DELIMITER}', QUOTE '', ESCAPE '', HEADER false, COMPRESSION gzip)").fetchall()
            plan.unique += int(written)


def local_path(plan: Plan, key: str) -> Path | None:
    """The local copy of a plan key, if this process made the plan."""
    if plan.local_dir is None or not key.startswith(plan.prefix):
        return None
    rest = key[len(plan.prefix):]
    path = (plan.local_dir / rest) if rest.startswith("bucket=") else (plan.local_dir.parent / rest)
    return path if path.is_file() else None


def _origin_name(origin: int, key: str, archive_root: Path | None) -> str:
    """An archived line's object key (its local path less the download directory), or the record's."""
    if origin == 0:
        marker = f"{archive_root}/" if archive_root is not None else ""
        return key[len(marker):] if marker and key.startswith(marker) else key
    return f"stream record {key}"


def _load_lines(connection: Any, paths: list[Path], stream_file: Path | None) -> None:
    connection.execute("DROP TABLE IF EXISTS plan_lines")
    options = (f"delim='{_DELIMITER}', quote='', escape='', header=false, compression='gzip', "
               "auto_detect=false, strict_mode=false, null_padding=false")
    parts = []
    if paths:
        files = "[" + ", ".join(sql.literal(str(p)) for p in paths) + "]"
        parts.append(f"SELECT line, 0 AS origin, filename AS archive_key FROM read_csv({files}, "
                     f"columns={{'line': 'VARCHAR'}}, filename=true, {options})")
    if stream_file is not None:
        parts.append(f"SELECT line, 1 AS origin, archive_key FROM read_csv({sql.literal(str(stream_file))}, "
                     f"columns={{'archive_key': 'VARCHAR', 'line': 'VARCHAR'}}, {options})")
    if not parts:
        connection.execute("CREATE TABLE plan_lines (line VARCHAR, origin INTEGER, archive_key VARCHAR)")
        return
    connection.execute("CREATE TABLE plan_lines AS " + " UNION ALL ".join(parts))


def _download(r: Replayer, objects: list[ArchiveObject], into: Path) -> list[Path]:
    s3, bucket = r.clients.s3, r.resources.archive_bucket

    def one(obj: ArchiveObject) -> Path:
        path = into / obj.key
        path.parent.mkdir(parents=True, exist_ok=True)
        body = s3.get_object(Bucket=bucket, Key=obj.key)["Body"]
        with open(path, "wb") as out:
            shutil.copyfileobj(body, out, 1 << 20)
        r.progress.advance(1)
        return path

    with ThreadPoolExecutor(max_workers=max(1, r.options.read_workers), thread_name_prefix="plan-get") as pool:
        return sorted(pool.map(one, objects))


def _repair(paths: list[Path]) -> list[str]:
    """Check each object; rewrite a damaged one as the lines it gave before the damage. Their names."""
    bad: list[str] = []
    for path in paths:
        lines: list[bytes] = []
        try:
            with open(path, "rb") as handle:
                lines.extend(iter_lines(handle))
        except (ArchiveError, zlib.error, OSError, EOFError) as exc:
            bad.append(f"{path.name} ({exc})")
            path.write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines), compresslevel=1))
    return bad


def _stream_records(r: Replayer, cuts: dict[str, dict[str, str]], into: Path, origins: Path | None) -> int:
    """Every stream record up to the cuts into `into` (`<stream>/<shard>/<position>` \\x01 data), and,
    with `origins`, `[event_id, namespace, position]` of each; the count written."""
    count = 0
    summary = r.summary
    with gzip.open(into, "wb", compresslevel=1) as out, \
            (gzip.open(origins, "wb", compresslevel=1) if origins else contextlib.nullcontext()) as marks:
        for stream in r.streams:
            mine = cuts.get(stream, {})
            for shard_id in shards_parents_first(r.clients.kinesis, stream):
                cut = mine.get(shard_id)
                if cut is None:  # no record at the cut: all it holds comes after
                    continue
                space = namespace(stream, shard_id)
                for item in _read(r, stream, shard_id, cut):
                    summary.events_read += 1
                    data = bytes(item["Data"]).strip()
                    try:
                        event = decode(data)
                    except EnvelopeError as exc:  # dead-lettered by the live mappings; nobody can fix it
                        summary.bad_record(f"{stream}/{shard_id} {item['SequenceNumber']}: {exc}")
                        continue
                    if b"\n" in data or _DELIMITER.encode() in data:  # (compact JSON holds neither)
                        data = orjson.dumps(event.to_dict())
                    position = position_of(item["SequenceNumber"])
                    out.write(f"{stream}/{shard_id}/{position}{_DELIMITER}".encode() + data + b"\n")
                    if marks is not None:
                        marks.write(orjson.dumps([event.event_id, space, position]) + b"\n")
                    count += 1
    return count


def _read(r: Replayer, stream: str, shard_id: str, cut: str) -> Iterator[dict[str, Any]]:
    yield from read_to_cut(r.clients.kinesis, stream, shard_id, cut)
