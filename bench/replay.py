"""Replay throughput: events per second from a local gzip JSON Lines archive, beside the floor.

Generates an archive of at least 1,000,000 events (a mix of UserRegistered, DisplayNameChanged,
PostCreated, PostEdited, PostDeleted, about 5% delivered twice) in the key layout of docs/api.md, "The archive", in a
temporary directory, then measures on the same files in the same run:

- floor: gunzip and parse every line (orjson), nothing else;
- replay: the replay path without DynamoDB: `ArchiveReader` (list, concurrent gunzip, hash partitions,
  de-duplication, per-stream order, gap check, upcasting), `metadata.replayed` marking, and the pure
  folds of `user_profiles` and `user_timeline` into dicts (`escore.projection.InMemoryProjection`).

Writes bench/results/replay.json and bench/results/replay.md.
Run: `.venv/bin/python -m bench.replay [--events N]`.
"""

from __future__ import annotations

import argparse
import gc
import json
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
from escore.projection import InMemoryProjection
from eventstack.archive import ArchiveReader, DirectorySource, ReadStats, hour_prefix, iter_lines
from eventstack.replay import REPLAYED
from profiles.projectors.user_profiles import PROJECTION as USER_PROFILES
from profiles.projectors.user_timeline import PROJECTION as USER_TIMELINE

RESULTS = Path(__file__).resolve().parent / "results"
PER_OBJECT = 10_000
T0 = datetime(2025, 11, 1, tzinfo=UTC)


def generate(root: Path, count: int, seed: int = 1) -> dict[str, Any]:
    """Write `count` unique events (plus duplicates) as Firehose objects; return what was written."""
    import gzip

    rng = random.Random(seed)
    users: list[str] = []
    live: list[str] = []
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
            stream, kind, data = f"post-{post}", "PostCreated", {
                "post_id": post, "author_id": rng.choice(users), "text": "a post about #things " * rng.randint(1, 6)}
        elif roll < 0.88:
            post = live[rng.randrange(len(live))]
            stream, kind, data = f"post-{post}", "PostEdited", {"text": "edited text " * rng.randint(1, 6)}
        else:
            post = live.pop(rng.randrange(len(live)))
            stream, kind, data = f"post-{post}", "PostDeleted", {}
        versions[stream] = versions.get(stream, 0) + 1
        service = "posts" if stream.startswith("post-") else "profiles"
        envelope = {
            "event_id": uid(), "stream_id": stream, "version": versions[stream], "type": kind,
            "schema_version": 1, "service": service, "occurred_at": format_timestamp(clock), "data": data,
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
    started = time.perf_counter()
    count = 0
    loads = orjson.loads
    for key in keys:
        with source.open(key) as stream:
            for line in iter_lines(stream):
                loads(line)
                count += 1
    seconds = time.perf_counter() - started
    return {"events": count, "seconds": seconds, "events_per_second": count / seconds}


def replay(root: Path, workers: int) -> dict[str, Any]:
    reader = ArchiveReader(source=DirectorySource(root), workers=workers)
    started = time.perf_counter()
    objects = reader.list("posts") + reader.list("profiles")
    stats = ReadStats()
    profiles = InMemoryProjection(USER_PROFILES)
    timeline = InMemoryProjection(USER_TIMELINE)
    scan_done = None
    for partition in reader.read(objects, stats=stats, mark={REPLAYED: True}):
        if scan_done is None:
            scan_done = time.perf_counter()
        for stream_id, events in partition.streams:
            profiles.apply(events)
            if stream_id.startswith("post-"):
                timeline.apply(events)
    seconds = time.perf_counter() - started
    assert stats.ok, stats.problems()
    return {
        "events_read": stats.events_read, "duplicates_dropped": stats.duplicates, "events_applied": stats.events,
        "partitions": stats.partitions, "scan_seconds": (scan_done or started) - started, "seconds": seconds,
        "events_per_second": stats.events_read / seconds,
        "unique_events_per_second": stats.events / seconds,
        "user_profiles_items": len(profiles.items), "user_timeline_items": len(timeline.items),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="unique events to generate (>= 1,000,000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--keep", help="generate into this directory and keep it")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="eventstack-bench-") as tmp:
        root = Path(args.keep or tmp)
        started = time.perf_counter()
        archive = generate(root, args.events)
        archive["generate_seconds"] = time.perf_counter() - started
        print(f"archive: {archive['lines']:,} lines in {archive['objects']} objects, "
              f"{archive['gzip_bytes'] / 1e6:.1f} MB gzip ({archive['generate_seconds']:.0f} s)", flush=True)
        gc.collect()
        floor_result = floor(root)
        print(f"floor (gunzip + parse): {floor_result['events_per_second']:,.0f} events/s", flush=True)
        gc.collect()
        replay_result = replay(root, args.workers)
        print(f"replay (read, dedup, order, upcast, fold): {replay_result['events_per_second']:,.0f} events/s",
              flush=True)

    ratio = replay_result["events_per_second"] / floor_result["events_per_second"]
    result = {
        "benchmark": "replay",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "archive": archive,
        "floor": floor_result,
        "replay": replay_result,
        "ratio_replay_to_floor": ratio,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "replay.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "replay.md").write_text(
        "# Replay benchmark\n\n"
        f"Measured {result['measured_at']} on {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"`python -m bench.replay` (one run; the floor and the replay read the same files).\n\n"
        f"Archive: {archive['unique_events']:,} unique events + {archive['duplicates']:,} duplicates = "
        f"{archive['lines']:,} lines in {archive['objects']} gzip JSON Lines objects "
        f"({archive['gzip_bytes'] / 1e6:.1f} MB), {archive['streams']:,} streams.\n\n"
        "| | events/s (lines read) | seconds |\n|---|---:|---:|\n"
        f"| floor: gunzip + parse | {floor_result['events_per_second']:,.0f} | {floor_result['seconds']:.1f} |\n"
        f"| replay: read, de-duplicate, order, upcast, mark, fold user_profiles + user_timeline | "
        f"{replay_result['events_per_second']:,.0f} | {replay_result['seconds']:.1f} |\n\n"
        f"Ratio replay / floor: **{ratio:.2f}**. The replay ordered the streams in "
        f"{replay_result['partitions']} hash partition(s) (spilled to disk when more than one), "
        f"dropped {replay_result['duplicates_dropped']:,} duplicates and folded "
        f"{replay_result['events_applied']:,} events into {replay_result['user_profiles_items']:,} profiles and "
        f"{replay_result['user_timeline_items']:,} timeline entries (in memory, no DynamoDB).\n"
    )
    print(f"ratio replay/floor: {ratio:.2f}; results in {RESULTS}/replay.json and replay.md")


if __name__ == "__main__":
    main()
