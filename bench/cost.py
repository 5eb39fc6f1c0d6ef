"""Cost per event, end to end: every billable unit per 1,000 events, beside a naive pipeline's.

Runs the local runtime (`eventstack local`'s `LocalRuntime`) in this process, so that the real
handlers' AWS requests can be counted from botocore event hooks, and attributes every request to
the function that made it (a context variable set around each invocation, by wrapping the
runtime's invoke path from here). The units are DynamoDB's as billed (bench/cost_units.py): write
units per started KB of the item written (the item after an UpdateItem, the item deleted by a
DeleteItem), twice that for a transaction's items, failed conditional writes included; read units
per started 4 KB, halved when eventually consistent, Query and Scan per page. The item images the
rules need are read back with a client of this benchmark's own, which is not counted. Also counted:
Kinesis records (1 KB on-demand rounding, 25 KB PUT payload units), Firehose ingestion (5 KB
rounding, the records put on Kinesis), Lambda invocations and GB-seconds (the CPU time of each
invocation's thread at the function's configured memory), S3 PUTs of the Firehose emulation, API
Gateway requests (the HTTP requests sent).

Workloads, on the same events:
1. reference: through the HTTP API, USERS users, POSTS posts with Zipf(1.1) authors, 60% of them
   with 1-3 hashtags; a fifth of the posts edited once, a tenth deleted, a quarter of the users
   renamed; CLIENTS concurrent clients; seeded. Then `POST /_local/drain`.
2. full batch: the events read back from each service's Kinesis stream (shard order) fed to fresh
   projection tables by the real projector handlers, BATCH records per invocation (what sustained
   load gives on AWS). Appends as in 1. Beside it, the floor: one write per appended event at its
   size, plus per batch the distinct read-model items the batch changes, at their size.
The naive baseline: one PutItem per appended event (at the event item's size) plus one 1-unit
UpdateItem per event per consuming projection (eventstack/topology.py), no transactions, no
de-duplication.

Dollars per million events come from bench/prices.toml (dated, with sources).
Writes bench/results/cost.json and BENCHMARKS.md (or --out PATH and --md PATH).

This module runs it; the parts are apart: the counting (bench.cost_ledger: the ledger and the
attribution; bench.cost_hooks: the botocore hooks and the uncounted image client), the workload
(bench.cost_workload), the floor and the full-batch variant (bench.cost_models), the results and
their writing (bench.cost_report), the unit rules (bench.cost_units).

    python -m bench.cost [--users 200] [--posts 2000] [--clients 8] [--seed 1] [--out PATH] [--md PATH]
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PRICES = Path(__file__).resolve().parent / "prices.toml"
if str(REPO / "lambdas") not in sys.path:  # the functions' asset root, as pytest's pythonpath has it
    sys.path.insert(0, str(REPO / "lambdas"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import cost_units as units  # noqa: E402
from bench.cost_hooks import Hooks, Images  # noqa: E402
from bench.cost_ledger import FIREHOSE, FULL_BATCH, REFERENCE, UNATTRIBUTED, Ledger, Patches, patch_runtime  # noqa: E402
from bench.cost_models import envelopes_of, floor_changed_items, run_full_batch, scan_events, stream_records  # noqa: E402
from bench.cost_report import headline, per_1000, summarize, write  # noqa: E402
from bench.cost_workload import Clients, Plan, http, make_plan  # noqa: E402

DEFAULT_MEMORY_MB = 256


# --- configuration read from the repository ------------------------------------------------------


def function_memory(function_names: list[str]) -> dict[str, int]:
    """Memory per function from infra/ (FunctionSpec.memory_mb, its default and the overrides)."""
    default = DEFAULT_MEMORY_MB
    kinds: dict[str, int] = {}
    infra = REPO / "infra"
    try:
        tree = ast.parse((infra / "functions.py").read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.ClassDef) and node.name == "FunctionSpec"):
                for stmt in node.body:
                    if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                            and stmt.target.id == "memory_mb" and isinstance(stmt.value, ast.Constant)):
                        default = int(stmt.value.value)
        for path in sorted(infra.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Call) and ast.unparse(node.func).endswith("FunctionSpec")):
                    continue
                keywords = {k.arg: k.value for k in node.keywords if k.arg}
                name = ast.unparse(keywords["name"]) if "name" in keywords else ""
                memory = keywords.get("memory_mb")
                mb = int(memory.value) if isinstance(memory, ast.Constant) else default
                if "api_function_name" in name:
                    kinds["api"] = mb
                elif "publisher" in name or path.stem == "publisher":
                    kinds["publisher"] = mb
                elif "projection" in name or path.stem == "projector":
                    kinds["projector"] = mb
    except (OSError, SyntaxError):
        pass
    out = {}
    for function in function_names:
        kind = function.rsplit("-", 1)[-1]
        out[function] = kinds.get(kind, default)
    return out


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                                  timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    status = [line for line in git("status", "--porcelain").splitlines() if line.strip()]
    changed = [line[3:] for line in status if not line[3:].startswith(("bench/", "BENCHMARKS.md"))]
    return {"commit": git("rev-parse", "HEAD"), "commit_short": git("rev-parse", "--short", "HEAD"),
            "subject": git("log", "-1", "--format=%s"), "uncommitted_changes_outside_bench": changed}


def load_prices(path: Path = PRICES) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


# --- the run ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(users: int = 200, posts: int = 2000, clients: int = 8, seed: int = 1, batch_size: int = 100,
        firehose_interval: float = 5.0) -> dict[str, Any]:
    import boto3

    from eventstack.local.runtime import LocalConfig, LocalRuntime
    from eventstack.topology import TOPOLOGY

    started = time.monotonic()
    ledger = Ledger()
    projector_functions = {p.function_name for _, p in TOPOLOGY.projections}
    patches = Patches()
    runtime = LocalRuntime(LocalConfig(port=free_port(), aws_port=free_port(), firehose_interval=firehose_interval))
    session_events = boto3._get_default_session().events  # what every handler's boto3.client(...) copies
    hooks: Hooks | None = None
    try:
        patch_runtime(patches, ledger, projector_functions)
        runtime.start()
        images = Images(runtime.aws_endpoint_url)
        hooks = Hooks(ledger, images)
        hooks.install(session_events)
        api = runtime.api_url
        plan = make_plan(users, posts, seed)

        # 1. the reference workload, through the HTTP API
        ledger.workload = REFERENCE
        load_started = time.monotonic()
        driver = Clients(api, plan, ledger, clients)
        driver.register_all()
        driver.run(plan.ops)
        answered = time.monotonic()
        status, _ = http(api, "POST", "/_local/drain?timeout=600", timeout=660)
        if status != 200:
            raise RuntimeError(f"drain answered {status}")
        drained = time.monotonic()

        # the events appended, and what the streams carry
        stores = {s.name: runtime.plan.table_names.get(s.event_store.logical_name, s.event_store.logical_name)
                  for s in TOPOLOGY.services}
        event_items = {service: scan_events(images, table) for service, table in stores.items()}
        records = {s.name: stream_records(images, runtime.plan.streams[s.name]) for s in TOPOLOGY.services}

        # 2. the full-batch variant, same events, fresh tables
        full_started = time.monotonic()
        full_info = run_full_batch(runtime, ledger, images, records, batch_size)
        full_seconds = time.monotonic() - full_started
    finally:
        if hooks is not None:
            hooks.uninstall(session_events)
        try:
            runtime.stop(drain_timeout=10)
        finally:
            patches.restore()

    return assemble(
        ledger=ledger, plan=plan, driver=driver, event_items=event_items, records=records, full_info=full_info,
        runtime_plan=runtime.plan, hook_errors=dict(hooks.errors) if hooks else {},
        config={"users": users, "posts": posts, "clients": clients, "seed": seed, "batch_size": batch_size,
                "firehose_interval_seconds": firehose_interval, "edits": len(plan.edits), "deletes": len(plan.deletes),
                "renames": len(plan.renames), "hashtag_fraction": 0.6, "zipf_s": 1.1},
        timings={"api_seconds": round(answered - load_started, 1), "drain_seconds": round(drained - answered, 1),
                 "full_batch_seconds": round(full_seconds, 1), "total_seconds": round(time.monotonic() - started, 1)},
    )


def assemble(*, ledger: Ledger, plan: Plan, driver: Clients, event_items: Mapping[str, list[dict[str, Any]]],
             records: Mapping[str, list[dict[str, Any]]], full_info: Mapping[str, Any], runtime_plan: Any,
             hook_errors: Mapping[str, int], config: Mapping[str, Any], timings: Mapping[str, Any]) -> dict[str, Any]:
    from eventstack.topology import TOPOLOGY

    prices = load_prices()
    consumers_of_service = Counter(sub.source for sub in TOPOLOGY.subscriptions)
    stream_consumers = {runtime_plan.streams[s]: consumers_of_service[s] + 1 for s in runtime_plan.streams}  # + Firehose
    sizes = {service: [units.item_size(item) for item in items] for service, items in event_items.items()}
    events = sum(len(v) for v in sizes.values())
    by_type = Counter(item["type"]["S"] for items in event_items.values() for item in items)
    naive_wcu = units.naive_write_units((size, consumers_of_service[service])
                                        for service, ss in sizes.items() for size in ss)
    append_units = sum(units.write_units(s) for ss in sizes.values() for s in ss)

    function_names = [f.name for f in runtime_plan.functions]
    order = ([f"{s.name}-api" for s in TOPOLOGY.services] + [f"{s.name}-publisher" for s in TOPOLOGY.services]
             + [p.function_name for _, p in TOPOLOGY.projections] + [FIREHOSE, UNATTRIBUTED])
    memory = function_memory(function_names)

    def floor_for(workload: str) -> dict[str, Any]:
        changed: dict[str, int] = {}
        batches_count: dict[str, int] = {}
        for _, projection in TOPOLOGY.projections:
            module = importlib.import_module(projection.folds)
            raw = ledger.batches[workload].get(projection.function_name, [])
            batches = [envelopes_of(b) for b in raw]
            item_sizes = floor_changed_items(module.PROJECTION, batches)
            changed[projection.name] = units.batch_write_units(item_sizes)
            batches_count[projection.name] = len(batches)
        total = append_units + sum(changed.values())
        return {"wcu": total, "wcu_per_1000_events": per_1000(total, events), "appends_wcu": append_units,
                "read_model_wcu": changed, "batches": batches_count,
                "definition": "one write per appended event at its size + per batch the distinct read-model "
                              "items the batch changes, at the size of the item it leaves"}

    reference_entries = ledger.data[REFERENCE]
    full_entries = {name: e for name, e in reference_entries.items()
                    if name not in {p.function_name for _, p in TOPOLOGY.projections}}
    full_entries.update({name: e for name, e in ledger.data[FULL_BATCH].items()})
    common = {"events": events, "naive_wcu": naive_wcu, "memory": memory, "consumers": stream_consumers,
              "api_requests": ledger.api_requests[REFERENCE], "prices": prices, "order": order}
    workloads = {
        REFERENCE: summarize(REFERENCE, reference_entries, floor=floor_for(REFERENCE), **common),
        FULL_BATCH: summarize(FULL_BATCH, full_entries, floor=floor_for(FULL_BATCH), **common),
    }
    workloads[REFERENCE]["description"] = (
        f"{config['users']} users, {config['posts']} posts (Zipf(1.1) authors, 60% with 1-3 hashtags), "
        f"{config['edits']} edits, {config['deletes']} deletes, {config['renames']} renames, "
        f"{config['clients']} HTTP clients, then drained; projector batches as the local mappings formed them")
    workloads[FULL_BATCH]["description"] = (
        f"The same events read back from the Kinesis streams, fed to fresh tables by the real projector handlers "
        f"in batches of {config['batch_size']} records; appends, publishers, Kinesis, Firehose, S3 and API "
        f"Gateway as in the reference workload")
    workloads[FULL_BATCH]["projector_runs"] = dict(full_info)

    return {
        "bench": "cost",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git": git_state(),
        "command": "python -m bench.cost " + " ".join(
            f"--{k} {v}" for k, v in (("users", config["users"]), ("posts", config["posts"]),
                                      ("clients", config["clients"]), ("seed", config["seed"]))),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "config": dict(config),
        "timings": dict(timings),
        "events": {
            "appended": events,
            "by_service": {s: len(v) for s, v in sizes.items()},
            "by_type": dict(sorted(by_type.items())),
            "event_item_bytes_mean": round(sum(sum(v) for v in sizes.values()) / events, 1) if events else 0,
            "kinesis_records_read_back": {s: len(v) for s, v in records.items()},
            "commands_answered": dict(driver.answers),
            "consuming_projections_per_service": dict(consumers_of_service),
        },
        "memory_mb": memory,
        "workloads": workloads,
        "prices": prices,
        "hook_errors": dict(hook_errors),
        "notes": NOTES,
    }


NOTES = [
    "DynamoDB units are computed from the requests and the item images, by the rules in bench/cost_units.py; "
    "an UpdateItem is billed on the item after the update and a PutItem on the item written (DynamoDB bills "
    "the larger of the item before and after; the difference here is a counter's digits).",
    "A failed conditional write is billed on the existing item (minimum 1 unit); a cancelled transaction "
    "bills each of its items as attempted, doubled.",
    "Lambda GB-seconds are the CPU time of the invocation's thread (botocore's client work included, the "
    "emulation's work not) rounded up to 1 ms, at the configured memory: a lower bound of the billed "
    "duration, which on AWS also counts the time spent waiting for DynamoDB and Kinesis.",
    "S3 PUTs depend on the Firehose buffering: locally --firehose-interval (5 s by default), on AWS the "
    "stage's buffering hints (60 s dev, 300 s prod). API Gateway is shown apart, at REST and HTTP API prices.",
    "DynamoDB Streams reads by Lambda and SSM standard-parameter reads are not billed and not priced; "
    "they are counted in each function's other_requests.",
]


# --- the command ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=100, help="records per invocation, full-batch variant")
    parser.add_argument("--firehose-interval", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=None, help="JSON result (default bench/results/cost.json)")
    parser.add_argument("--md", type=Path, default=None,
                        help="Markdown (default BENCHMARKS.md, or next to --out when --out is given); '-' for none")
    parser.add_argument("--before", type=Path, default=RESULTS / "cost-before.json",
                        help="a earlier result to compare with in the Markdown (default bench/results/cost-before.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    out = args.out or RESULTS / "cost.json"
    if args.md is not None and str(args.md) == "-":
        md: Path | None = None
    else:
        md = args.md or (out.with_suffix(".md") if args.out else REPO / "BENCHMARKS.md")
    result = run(args.users, args.posts, args.clients, args.seed, args.batch_size, args.firehose_interval)
    before = None
    if args.before and args.before.exists() and args.before.resolve() != out.resolve():
        try:
            before = json.loads(args.before.read_text())
        except ValueError:
            before = None
    write(result, out, md, before)
    for line in headline(result):
        print(line)
    print(f"wrote {out}" + (f" and {md}" if md else ""))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
