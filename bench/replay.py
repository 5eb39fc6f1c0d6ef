"""Replay throughput: the local engine's plan and fold, beside the gunzip-and-parse floor, on one archive.

Generates an archive of at least 1,000,000 events (a mix of UserRegistered, DisplayNameChanged,
PostCreated, PostEdited, PostDeleted at the schemas the current code writes, about 5% delivered twice) in the key layout of docs/api.md,
"The archive", in a temporary directory, then measures on the same files in the same run:

- floor: gunzip and parse every line (orjson), one core, nothing else;
- plan: the local engine's plan step (eventstack.replay_plan.plan_files: DuckDB reads every line,
  de-duplicates by event_id, buckets by stream, orders each bucket, writes gzip files);
- fold, one worker: the plan's files folded by `escore.replay_file.fold_plan_file` (gunzip, orjson,
  envelopes marked replayed, `escore.rebuild.TableFold.apply_stream` stream by stream, the items made; nothing
  written: DynamoDB is not measured here), for user_profiles (every event) and user_timeline;
- scaling: the same fold over a process pool of 1, 2 and 4 workers (wall seconds).

Writes bench/results/replay.json and bench/results/replay.md (or `--out`).
Run: `.venv/bin/python -m bench.replay [--events N]`.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# lambdas/ is the functions' asset root: its packages import as top-level ones (as pytest's pythonpath).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lambdas"))

import orjson

from escore.envelope import format_timestamp
from escore.replay_file import PlanItem, fold_plan_file
from eventstack.archive import DirectorySource, hour_prefix, iter_lines
from eventstack.replay_plan import Plan, plan_files
from posts.contract import PostCreated, PostDeleted, PostEdited, hashtags
from profiles.projectors.user_profiles import PROJECTION as USER_PROFILES
from profiles.projectors.user_timeline import PROJECTION as USER_TIMELINE

SPECS = {"user_profiles": USER_PROFILES, "user_timeline": USER_TIMELINE}
# Events as the current code writes them (each carries the facts its folds need; nothing to upcast).
SCHEMAS = {"UserRegistered": 1, "DisplayNameChanged": 1, "PostCreated": PostCreated.schema_version,
           "PostEdited": PostEdited.schema_version, "PostDeleted": PostDeleted.schema_version}

RESULTS = Path(__file__).resolve().parent / "results"
PER_OBJECT = 10_000
T0 = datetime(2025, 11, 1, tzinfo=UTC)


def generate(root: Path, count: int, seed: int = 1) -> dict[str, Any]:
    """Write `count` unique events (plus duplicates) as Firehose objects; return what was written."""
    import gzip

    rng = random.Random(seed)
    users: list[str] = []
    live: list[str] = []
    facts: dict[str, dict[str, Any]] = {}  # post -> what its later events carry (as the current code writes them)
    versions: dict[str, int] = {}
    clock = T0
    out: dict[str, list[bytes]] = {"posts": [], "profiles": []}
    objects = {"posts": 0, "profiles": 0}
    lines = duplicates = 0
    types: dict[str, int] = {}

    def uid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def flush(service: str, final: bool = False) -> None:
        nonlocal lines
        buffer = out[service]
        while len(buffer) >= PER_OBJECT or (final and buffer):
            chunk, out[service] = buffer[:PER_OBJECT], buffer[PER_OBJECT:]
            buffer = out[service]
            n = objects[service]
            hour = T0 + timedelta(hours=n // 4)
            path = root / f"{hour_prefix(service, hour)}eventstack-bench-{service}-archive-{n:06d}.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(gzip.compress(b"".join(chunk), compresslevel=6))
            objects[service] += 1
            lines += len(chunk)

    for _ in range(count):
        clock += timedelta(microseconds=rng.randint(1, 50_000))
        roll = rng.random()
        if not users or roll < 0.07:
            user = uid()
            users.append(user)
            stream, kind, data = f"user-{user}", "UserRegistered", {
                "user_id": user, "handle": f"user_{len(users)}", "display_name": f"User {len(users)}"}
        elif roll < 0.10:
            user = rng.choice(users)
            stream, kind, data = f"user-{user}", "DisplayNameChanged", {"display_name": f"Name {rng.randint(0, 10**6)}"}
        elif roll < 0.55 or len(live) < 10:
            post = uid()
            live.append(post)
            text = "a post about #things " * rng.randint(1, 6)
            facts[post] = {"author_id": rng.choice(users), "created_at": format_timestamp(clock), "tags": hashtags(text)}
            stream, kind, data = f"post-{post}", "PostCreated", {
                "post_id": post, "author_id": facts[post]["author_id"], "text": text, "tags": facts[post]["tags"]}
        elif roll < 0.88:
            post = live[rng.randrange(len(live))]
            text = "edited text #edit " * rng.randint(1, 6)
            before = facts[post]
            facts[post] = {**before, "tags": hashtags(text)}
            stream, kind, data = f"post-{post}", "PostEdited", {
                "text": text, "tags": facts[post]["tags"], "author_id": before["author_id"],
                "created_at": before["created_at"], "previous_tags": before["tags"]}
        else:
            post = live.pop(rng.randrange(len(live)))
            stream, kind, data = f"post-{post}", "PostDeleted", facts.pop(post)
        versions[stream] = versions.get(stream, 0) + 1
        service = "posts" if stream.startswith("post-") else "profiles"
        envelope = {
            "event_id": uid(), "stream_id": stream, "version": versions[stream], "type": kind,
            "schema_version": SCHEMAS[kind], "service": service, "occurred_at": format_timestamp(clock), "data": data,
            "metadata": {"correlation_id": uid()},
        }
        line = orjson.dumps(envelope) + b"\n"
        out[service].append(line)
        types[kind] = types.get(kind, 0) + 1
        if rng.random() < 0.05:  # delivered again, a little later
            out[service].append(line)
            duplicates += 1
        flush(service)
    flush("posts", final=True)
    flush("profiles", final=True)
    size = sum(p.stat().st_size for p in root.rglob("*.gz"))
    return {"unique_events": count, "lines": lines, "duplicates": duplicates, "objects": sum(objects.values()),
            "gzip_bytes": size, "types": types, "streams": len(versions)}


def floor(root: Path) -> dict[str, Any]:
    """Gunzip and parse every line of every object: the least any replay has to do."""
    source = DirectorySource(root)
    keys = [k for k, _ in source.list("events/")]
    started, cpu = time.perf_counter(), time.process_time()
    count = 0
    loads = orjson.loads
    for key in keys:
        with source.open(key) as stream:
            for line in iter_lines(stream):
                loads(line)
                count += 1
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"events": count, "seconds": seconds, "events_per_second": count / seconds, "cpu_seconds": cpu,
            "events_per_cpu_second": count / cpu}


def archive_paths(root: Path) -> list[Path]:
    """The archive's objects, in key order (as the plan reads them)."""
    return sorted(root.glob("events/**/*.gz"))


def plan(root: Path, out: Path, files: int) -> dict[str, Any]:
    """The local engine's plan step alone: DuckDB de-duplicates, buckets and orders into `files` files."""
    result = Plan([], "bench/", local_dir=out)
    started = time.perf_counter()
    plan_files(result, archive_paths(root), None, files, out)
    seconds = time.perf_counter() - started
    assert not result.problems, result.problems
    return {"files": files, "lines": result.lines, "unique_events": result.unique,
            "duplicates_dropped": result.lines - result.unique, "seconds": seconds,
            "lines_per_second": result.lines / seconds,
            "plan_bytes": sum(p.stat().st_size for p in out.rglob("*.gz"))}


def plan_items(out: Path, files: int) -> list[PlanItem]:
    return [PlanItem(projection="", folds="", stage="bench", table="bench", bucket="bench",
                     keys=[str(p) for p in sorted(out.glob(f"bucket={k}/*"))], index=k, count=files)
            for k in range(files)]


def fold_file(job: tuple[dict[str, Any], str]) -> dict[str, Any]:
    """One plan file folded by `projection`'s folds, nothing written (in a pool process too)."""
    raw, projection = job
    item = PlanItem.model_validate(raw)
    cpu = time.process_time()
    result = fold_plan_file(item, None, lambda key: open(key, "rb"), spec=SPECS[projection]).as_dict()  # noqa: SIM115 (the core closes it)
    return {**result, "cpu_seconds": time.process_time() - cpu}


def fold(items: list[PlanItem], projection: str, workers: int) -> dict[str, Any]:
    """The plan's files folded by `workers` processes (1: in this process), wall time from the first
    file opened (a pool's processes are started and warmed first) to the last file folded."""
    jobs = [(item.model_dump(), projection) for item in items]
    if workers == 1:
        started = time.perf_counter()
        results = [fold_file(job) for job in jobs]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(_warm, range(workers))
            started = time.perf_counter()
            results = pool.map(fold_file, jobs, chunksize=1)
    seconds = time.perf_counter() - started
    events = sum(r["events"] for r in results)
    assert all(r["status"] == "done" for r in results), [r["problems"] for r in results]
    return {"projection": projection, "workers": workers, "files": len(items), "events": events,
            "folded": sum(r["folded"] for r in results), "items": sum(r["items"] for r in results),
            "seconds": seconds, "events_per_second": events / seconds,
            "cpu_seconds": (cpu := sum(r["cpu_seconds"] for r in results)), "events_per_cpu_second": events / cpu}


def _warm(_: int) -> None:
    time.sleep(0.2)  # every process of the pool is up before the clock starts


def profile_fold(items: list[PlanItem], projection: str) -> list[str]:
    """The fold's top functions by own time (cProfile), one file."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    fold_file((items[0].model_dump(), projection))
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
    return [line for line in text.getvalue().splitlines() if line.strip()][-13:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="unique events to generate (>= 1,000,000)")
    parser.add_argument("--files", type=int, default=4, help="the plan's file count (the most workers measured)")
    parser.add_argument("--scaling", default="1,2,4", help="worker counts to measure")
    parser.add_argument("--keep", help="generate into this directory and keep it")
    parser.add_argument("--out", default=str(RESULTS), help="where replay.json and replay.md go")
    args = parser.parse_args()
    scaling = [int(n) for n in args.scaling.split(",")]
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="eventstack-bench-") as tmp:
        root = Path(args.keep or tmp)
        started = time.perf_counter()
        archive = generate(root, args.events)
        archive["generate_seconds"] = time.perf_counter() - started
        print(f"archive: {archive['lines']:,} lines in {archive['objects']} objects, "
              f"{archive['gzip_bytes'] / 1e6:.1f} MB gzip ({archive['generate_seconds']:.0f} s)", flush=True)
        gc.collect()
        floor_result = floor(root)
        print(f"floor (gunzip + parse, one core): {floor_result['events_per_second']:,.0f} events/s", flush=True)
        out = Path(tmp) / "plan"
        plan_result = plan(root, out, args.files)
        print(f"plan (DuckDB): {plan_result['seconds']:.1f} s for {plan_result['lines']:,} lines", flush=True)
        items = plan_items(out, args.files)
        gc.collect()
        folds = {name: fold(items, name, 1) for name in ("user_profiles", "user_timeline")}
        for name, result in folds.items():
            print(f"fold {name}, 1 worker: {result['events_per_second']:,.0f} events/s", flush=True)
        scaled = [fold(items, "user_profiles", n) for n in scaling]
        for result in scaled:
            print(f"  {result['workers']} worker(s): {result['seconds']:.2f} s, "
                  f"{result['events_per_second']:,.0f} events/s", flush=True)
        profile = profile_fold(items, "user_profiles")

    floor_rate = floor_result["events_per_second"]
    one = folds["user_profiles"]
    result = {
        "benchmark": "replay",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "archive": archive,
        "floor": floor_result,
        "plan": plan_result,
        "fold_1_worker": {name: {**r, "ratio_to_floor": r["events_per_second"] / floor_rate,
                                 "ratio_to_floor_cpu": r["events_per_cpu_second"] / floor_result["events_per_cpu_second"]}
                          for name, r in folds.items()},
        "load_average_before": load_before,
        "ratio_fold_to_floor": one["events_per_second"] / floor_rate,
        # the same ratio in CPU time (the machine is shared: wall time also counts waiting for a core)
        "ratio_fold_to_floor_cpu": one["events_per_cpu_second"] / floor_result["events_per_cpu_second"],
        "scaling": [{**r, "speedup": r["events_per_second"] / scaled[0]["events_per_second"]} for r in scaled],
        "profile_user_profiles_one_file": profile,
    }
    target = Path(args.out)
    target.mkdir(parents=True, exist_ok=True)
    (target / "replay.json").write_text(json.dumps(result, indent=2) + "\n")
    (target / "replay.md").write_text(markdown(result))
    print(f"ratio fold/floor: {result['ratio_fold_to_floor']:.2f}; results in {target}/replay.json and replay.md")


def markdown(result: dict[str, Any]) -> str:
    archive, floor_result, plan_result = result["archive"], result["floor"], result["plan"]
    cpus = result["machine"]["cpus"]
    rows = "".join(
        f"| fold {name}, 1 worker | {r['events_per_second']:,.0f} | {r['seconds']:.1f} | {r['ratio_to_floor']:.2f} | "
        f"{r['events_per_cpu_second']:,.0f} | {r['ratio_to_floor_cpu']:.2f} |\n"
        for name, r in result["fold_1_worker"].items())
    scaling = "".join(f"| {r['workers']} | {r['seconds']:.2f} | {r['events_per_second']:,.0f} | {r['speedup']:.2f} |\n"
                      for r in result["scaling"])
    return (
        "# Replay benchmark\n\n"
        f"Measured {result['measured_at']} on {cpus} CPUs, Python {result['machine']['python']}, "
        "`python -m bench.replay` (one run; the floor, the plan and the folds read the same archive).\n\n"
        f"Archive: {archive['unique_events']:,} unique events + {archive['duplicates']:,} duplicates = "
        f"{archive['lines']:,} lines in {archive['objects']} gzip JSON Lines objects "
        f"({archive['gzip_bytes'] / 1e6:.1f} MB), {archive['streams']:,} streams.\n\n"
        "| step | events/s | seconds | ratio to the floor | events per CPU-second | ratio, CPU time |\n"
        "|---|---:|---:|---:|---:|---:|\n"
        f"| floor: gunzip + parse every archived line, one core | {floor_result['events_per_second']:,.0f} | "
        f"{floor_result['seconds']:.1f} | 1.00 | {floor_result['events_per_cpu_second']:,.0f} | 1.00 |\n"
        f"| plan (DuckDB, {cpus} threads): read, de-duplicate, bucket, order, write {plan_result['files']} gzip files | "
        f"{plan_result['lines_per_second']:,.0f} (lines) | {plan_result['seconds']:.1f} | | | |\n"
        f"{rows}\n"
        f"Fold = one worker reading the plan's files (gunzip + orjson), decoding each envelope (marked replayed), "
        f"folding stream by stream with `escore.rebuild.TableFold` and making the items (nothing written: "
        f"DynamoDB is not part of this figure). Ratio fold (user_profiles, which reads every event) / floor: "
        f"**{result['ratio_fold_to_floor']:.2f}** ({result['ratio_fold_to_floor_cpu']:.2f} in CPU time). The machine "
        f"was shared with other work (load average {result['load_average_before']:.1f} when the run began), so "
        "wall-clock figures carry that noise; the CPU-time columns count only this process's own work.\n\n"
        f"Scaling (user_profiles, the plan's {plan_result['files']} files over a process pool; the machine has "
        f"{cpus} CPUs, so more than {cpus} workers share them):\n\n"
        "| workers | seconds | events/s | speedup |\n|---:|---:|---:|---:|\n"
        f"{scaling}"
    )


if __name__ == "__main__":
    main()
