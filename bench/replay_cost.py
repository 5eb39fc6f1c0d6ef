"""What `eventstack replay --engine aws` of a billion events costs and how long it takes: a model, not a
measurement (no AWS account here). Every input is named in the output with where it comes from:

- bench/prices.toml: the dated prices (Athena per TB scanned, Step Functions transitions and
  Distributed Map children, Lambda GB-seconds and requests, S3 GET and PUT, DynamoDB writes).
- bench/results/replay.json: the benchmark archive (compressed bytes per line, lines per unique event,
  lines per archive object, read-model items per event) and the measured local fold rate.
- bench/results/cost.json: DynamoDB write units per event of the live projector in full batches (the
  upper bound of what a rebuild writes; a rebuild writes each item's final state once, the lower).
- The code's own sizing: eventstack.replay_aws (events per bucket, 100 buckets per UNLOAD) and
  infra/replay.py (the worker's memory, its retries).
- DynamoDB on-demand throughput (docs/replay.md cites it): a new on-demand table takes 4,000 write units
  a second at once and may double its previous peak every 30 minutes, up to the default table quota
  of 40,000 write units a second.

`python -m bench.replay_cost [--events N] [--projection NAME]` writes bench/results/replay_cost.json.
"""

from __future__ import annotations

import argparse
import json
import math
import tomllib
from pathlib import Path
from typing import Any

from eventstack import replay_aws

ROOT = Path(__file__).resolve().parent
PRICES = ROOT / "prices.toml"
COMMITTED = ROOT / "results"
RESULTS = COMMITTED  # `python -m bench --out DIR` points this at DIR (bench/__main__.py)

WORKER_MEMORY_MB = 3072  # infra/replay.py WORKER_MEMORY_MB (read from there: infra imports CDK)
TRANSITIONS_PER_CHILD = 2  # the child's Task state entered and left (beside the charge per child started)
PARENT_TRANSITIONS = 3  # the execution's start, its Map state, its end
NEW_TABLE_WRU = 4_000  # a new on-demand table at once
TABLE_QUOTA_WRU = 40_000  # the default per-table on-demand write quota
DOUBLING_SECONDS = 1_800  # an on-demand table may double its previous peak every 30 minutes
WORKER_GETS_PER_BUCKET = 3  # the bucket's plan files (UNLOAD writes one or a few per partition) and its marker read


def price(prices: dict[str, Any], name: str) -> float:
    """Dollars per one unit of `name`; an unsourced price (no `usd`) is an error here, never a guess."""
    entry = prices["prices"][name]
    if "usd" not in entry:
        raise KeyError(f"{name} has no sourced price in bench/prices.toml")
    return float(entry["usd"]) / float(entry["per"])


def write_seconds(units: float, *, start: float = NEW_TABLE_WRU, cap: float = TABLE_QUOTA_WRU) -> float:
    """Seconds to write `units` write units into a new on-demand table that doubles every 30 minutes."""
    seconds, rate = 0.0, start
    while units > 0:
        window = rate * DOUBLING_SECONDS
        if rate >= cap or units <= window:
            return seconds + units / min(rate, cap)
        units -= window
        seconds += DOUBLING_SECONDS
        rate = min(rate * 2, cap)
    return seconds


def model(events: int, projection: str) -> dict[str, Any]:
    prices = tomllib.loads(PRICES.read_text())
    replay = json.loads(_input("replay.json").read_text())
    cost = json.loads(_input("cost.json").read_text())
    archive = replay["archive"]
    unique, lines_measured = archive["unique_events"], archive["lines"]
    bytes_per_line = archive["gzip_bytes"] / lines_measured
    lines_per_event = lines_measured / unique
    lines_per_object = lines_measured / archive["objects"]
    fold = replay["fold_1_worker"][projection]  # one worker folding the plan's files (bench/replay.py)
    fold_rate = fold["events_per_second"]
    items_per_event = fold["items"] / unique
    wcu_per_event_batches = cost["workloads"]["full_batch"]["functions"][f"{projection}-projector"]["wcu_per_1000_events"] / 1000

    lines = events * lines_per_event
    window_bytes = lines * bytes_per_line
    buckets = replay_aws.bucket_count(int(window_bytes))
    unloads = math.ceil(buckets / replay_aws.UNLOAD_MAX_PARTITIONS)
    scanned = unloads * window_bytes  # each UNLOAD reads the whole window: JSON text has no column pruning
    objects = lines / lines_per_object
    gets = unloads * objects + buckets * WORKER_GETS_PER_BUCKET
    puts = 2 * buckets + 1 + unloads  # plan files (about two per bucket), the manifest, the UNLOAD metadata

    gb = WORKER_MEMORY_MB / 1024
    sizing_rate = replay_aws.EVENTS_PER_FILE / 900  # the per-file budget: 15 minutes per bucket
    transitions = buckets * (1 + TRANSITIONS_PER_CHILD) + PARENT_TRANSITIONS

    writes = {"items_once": events * items_per_event + buckets, "per_batch": events * wcu_per_event_batches + buckets}
    dollars_fixed = {
        "athena": scanned / 1e12 * price(prices, "athena_tb_scanned"),
        "s3_get": gets * price(prices, "s3_get_requests"),
        "s3_put": puts * price(prices, "s3_put_requests"),
        "step_functions": buckets * price(prices, "step_functions_distributed_map_child")
        + (buckets * TRANSITIONS_PER_CHILD + PARENT_TRANSITIONS) * price(prices, "step_functions_state_transition"),
        "lambda_requests": buckets * price(prices, "lambda_requests"),
    }
    cases = {}
    for name, rate in (("measured_fold_rate", fold_rate), ("sizing_fold_rate", sizing_rate)):
        worker_seconds = events / rate
        gb_seconds = worker_seconds * gb
        for writes_name, units in writes.items():
            dollars = {
                **dollars_fixed,
                "lambda_duration": gb_seconds * price(prices, "lambda_arm_gb_second"),
                "dynamodb_writes": units * price(prices, "dynamodb_write_request_unit"),
            }
            per_worker_wcu = rate * units / events
            workers_at_quota = max(1, min(buckets, math.ceil(TABLE_QUOTA_WRU / per_worker_wcu)))
            fold_bound = worker_seconds / workers_at_quota
            write_bound = write_seconds(units)
            cases[f"{name}/{writes_name}"] = {
                "worker_seconds": round(worker_seconds),
                "gb_seconds": round(gb_seconds),
                "write_units": round(units),
                "write_units_per_second_per_worker": round(per_worker_wcu),
                "max_concurrency_at_quota": workers_at_quota,
                "fold_hours": round(max(fold_bound, write_bound) / 3600, 2),
                "bound_by": "table writes" if write_bound >= fold_bound else "fold",
                "dollars": {k: round(v, 2) for k, v in dollars.items()},
                "dollars_total": round(sum(dollars.values()), 2),
            }
    return {
        "bench": "replay_cost",
        "what": f"replay --engine aws of {events:,} unique events into a new {projection} table (a model)",
        "prices_read_on": prices["read_on"],
        "inputs": {
            "events": events,
            "projection": projection,
            "bytes_per_line": round(bytes_per_line, 2),
            "lines_per_unique_event": round(lines_per_event, 4),
            "lines_per_archive_object": round(lines_per_object),
            "measured_fold_rate_events_per_second": round(fold_rate),
            "sizing_fold_rate_events_per_second": round(sizing_rate),
            "items_per_event": round(items_per_event, 4),
            "write_units_per_event_in_batches": round(wcu_per_event_batches, 4),
            "worker_memory_mb": WORKER_MEMORY_MB,
            "events_per_bucket": replay_aws.EVENTS_PER_FILE,
            "new_table_wru": NEW_TABLE_WRU,
            "table_quota_wru": TABLE_QUOTA_WRU,
            "sources": {
                "archive_and_fold_rate": f"bench/results/replay.json ({replay['measured_at']})",
                "write_units_in_batches": f"bench/results/cost.json ({cost['when']}, full_batch)",
                "prices": "bench/prices.toml",
            },
        },
        "plan": {
            "window_gb": round(window_bytes / 1e9, 1),
            "buckets": buckets,
            "unloads": unloads,
            "athena_scanned_gb": round(scanned / 1e9, 1),
            "s3_gets": round(gets),
            "s3_puts": puts,
            "state_transitions": transitions,
        },
        "cases": cases,
        "not_modelled": [
            "Athena's own run time (no measurement: each UNLOAD scans the window once)",
            "the catch-up and hand-off (as for the local engine)",
            "Kinesis reads of the stream records up to the cuts (on-demand rates not sourced)",
            "Glue Data Catalog requests and S3 LIST requests of partition projection (pruned to the window's years)",
            "the plan's S3 storage until it expires (the results bucket's lifecycle)",
        ],
    }


def _input(name: str) -> Path:
    """A benchmark's result this model reads: the one this run wrote (RESULTS), else the committed one."""
    fresh = RESULTS / name
    return fresh if fresh.is_file() else COMMITTED / name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000_000)
    parser.add_argument("--projection", default="user_timeline")
    args = parser.parse_args()
    result = model(args.events, args.projection)
    (RESULTS / "replay_cost.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("plan",)}, indent=1))
    for name, case in result["cases"].items():
        print(f"{name}: ${case['dollars_total']:,.2f}, {case['fold_hours']} h ({case['bound_by']})")


if __name__ == "__main__":
    main()
