"""The cost benchmark's results: per-workload summaries, modelled dollars, the JSON and the Markdown.

`summarize` turns a workload's ledger entries into units per 1,000 events (per function and in
total, beside the naive baseline and the floor) and `dollars` prices them with bench/prices.toml;
`write` writes bench/results/cost.json and BENCHMARKS.md (`markdown`, with `before_after` when an
earlier result is given); `headline` is what the command prints.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bench import cost_units as units
from bench.cost_ledger import FULL_BATCH, REFERENCE

REPO = Path(__file__).resolve().parents[1]
GB = 1024**3


def per_1000(value: float, events: int) -> float:
    return round(1000 * value / events, 1) if events else 0.0


def price_of(prices: Mapping[str, Any], name: str) -> float | None:
    entry = prices["prices"].get(name) or {}
    if entry.get("status") == "not_found" or "usd" not in entry:
        return None
    return float(entry["usd"]) / float(entry.get("per", 1))


def summarize(workload: str, entries: Mapping[str, Mapping[str, Any]], *, events: int, naive_wcu: int,
              floor: Mapping[str, Any] | None, memory: Mapping[str, int], consumers: Mapping[str, int],
              api_requests: int, prices: Mapping[str, Any], order: list[str]) -> dict[str, Any]:
    functions: dict[str, Any] = {}
    names = [n for n in order if n in entries] + sorted(n for n in entries if n not in order)
    totals = {"wcu": 0.0, "rcu": 0.0, "invocations": 0, "billed_ms": 0, "gb_seconds": 0.0, "cpu_seconds": 0.0,
              "s3_puts": 0, "transact_items": 0}
    kinesis = Counter()
    retrieved_bytes = 0
    for name in names:
        e = entries[name]
        mem = memory.get(name)
        gbs = units.gb_seconds(e["billed_ms"], mem) if mem else 0.0
        functions[name] = {
            "wcu": round(e["wcu"], 1), "rcu": round(e["rcu"], 1),
            "wcu_per_1000_events": per_1000(e["wcu"], events), "rcu_per_1000_events": per_1000(e["rcu"], events),
            "dynamodb_requests": {op: {"requests": v["requests"], "wcu": round(v["wcu"], 1), "rcu": round(v["rcu"], 1)}
                                  for op, v in sorted(e["dynamodb_requests"].items())},
            "transact_items": e["transact_items"], "failed_conditional_writes": e["failed_conditional_writes"],
            "invocations": e["invocations"], "cpu_seconds": round(e["cpu_seconds"], 3), "billed_ms": e["billed_ms"],
            "memory_mb": mem, "gb_seconds": round(gbs, 4), "s3_puts": e["s3_puts"],
            "other_requests": dict(sorted((k, v) for k, v in e["requests"].items() if not k.startswith("dynamodb:"))),
        }
        if e["kinesis"]["records"]:
            functions[name]["kinesis_records"] = e["kinesis"]["records"]
        totals["wcu"] += e["wcu"]
        totals["rcu"] += e["rcu"]
        totals["invocations"] += e["invocations"]
        totals["billed_ms"] += e["billed_ms"]
        totals["gb_seconds"] += gbs
        totals["cpu_seconds"] += e["cpu_seconds"]
        totals["s3_puts"] += e["s3_puts"]
        totals["transact_items"] += e["transact_items"]
        for k in ("records", "bytes", "data_bytes", "on_demand_kb", "put_payload_units", "firehose_billed_bytes"):
            kinesis[k] += e["kinesis"][k]
        for stream, data in e["kinesis"]["data_bytes_by_stream"].items():
            retrieved_bytes += data * consumers.get(stream, 1)
    result: dict[str, Any] = {
        "events": events,
        "functions": functions,
        "dynamodb": {
            "wcu": round(totals["wcu"], 1), "rcu": round(totals["rcu"], 1),
            "wcu_per_1000_events": per_1000(totals["wcu"], events),
            "rcu_per_1000_events": per_1000(totals["rcu"], events),
            "transact_items": totals["transact_items"],
        },
        "naive": {"wcu": naive_wcu, "wcu_per_1000_events": per_1000(naive_wcu, events)},
        "ratio_wcu_to_naive": round(totals["wcu"] / naive_wcu, 3) if naive_wcu else None,
    }
    if floor is not None:
        result["floor"] = dict(floor)
        result["ratio_wcu_to_floor"] = round(totals["wcu"] / floor["wcu"], 3) if floor.get("wcu") else None
        result["ratio_floor_to_naive"] = round(floor["wcu"] / naive_wcu, 3) if naive_wcu else None
    result["kinesis"] = {
        "records": kinesis["records"], "bytes": kinesis["bytes"],
        "records_per_1000_events": per_1000(kinesis["records"], events),
        "on_demand_ingest_kb": kinesis["on_demand_kb"],
        "on_demand_ingest_kb_per_1000_events": per_1000(kinesis["on_demand_kb"], events),
        "on_demand_retrieved_bytes": retrieved_bytes,
        "put_payload_units": kinesis["put_payload_units"],
        "put_payload_units_per_1000_events": per_1000(kinesis["put_payload_units"], events),
    }
    result["firehose"] = {
        "records": kinesis["records"], "billed_bytes": kinesis["firehose_billed_bytes"],
        "billed_kb_per_1000_events": per_1000(kinesis["firehose_billed_bytes"] / 1024, events),
    }
    result["lambda"] = {
        "invocations": totals["invocations"], "invocations_per_1000_events": per_1000(totals["invocations"], events),
        "cpu_seconds": round(totals["cpu_seconds"], 2), "billed_ms": totals["billed_ms"],
        "gb_seconds": round(totals["gb_seconds"], 3),
        "gb_seconds_per_1000_events": round(1000 * totals["gb_seconds"] / events, 4) if events else 0.0,
    }
    result["s3"] = {"put_requests": totals["s3_puts"], "put_requests_per_1000_events": per_1000(totals["s3_puts"], events)}
    result["api_gateway"] = {"requests": api_requests, "requests_per_1000_events": per_1000(api_requests, events)}
    result["dollars_per_million_events"] = dollars(result, naive_wcu, floor, events, prices)
    return result


def dollars(r: Mapping[str, Any], naive_wcu: int, floor: Mapping[str, Any] | None, events: int,
            prices: Mapping[str, Any]) -> dict[str, Any]:
    scale = 1_000_000 / events if events else 0.0

    def cost(quantity: float, price: str) -> float | None:
        p = price_of(prices, price)
        return None if p is None else round(quantity * p * scale, 4)

    lines = {
        "dynamodb_writes": cost(r["dynamodb"]["wcu"], "dynamodb_write_request_unit"),
        "dynamodb_reads": cost(r["dynamodb"]["rcu"], "dynamodb_read_request_unit"),
        "kinesis_provisioned_put_payload_units": cost(r["kinesis"]["put_payload_units"], "kinesis_put_payload_unit"),
        "kinesis_on_demand_data_in": cost(r["kinesis"]["on_demand_ingest_kb"] * 1024 / GB, "kinesis_on_demand_data_in"),
        "kinesis_on_demand_data_out": cost(r["kinesis"]["on_demand_retrieved_bytes"] / GB, "kinesis_on_demand_data_out"),
        "firehose_ingestion": cost(r["firehose"]["billed_bytes"] / GB, "firehose_ingestion"),
        "lambda_requests": cost(r["lambda"]["invocations"], "lambda_requests"),
        "lambda_duration": cost(r["lambda"]["gb_seconds"], "lambda_arm_gb_second"),
        "s3_puts": cost(r["s3"]["put_requests"], "s3_put_requests"),
    }
    modelled = [v for k, v in lines.items() if v is not None and not k.startswith("kinesis_on_demand")]
    out: dict[str, Any] = dict(lines)
    out["total_modelled"] = round(sum(modelled), 4)
    out["total_modelled_covers"] = "DynamoDB, Kinesis provisioned PUT payload units, Lambda, S3 PUTs (the priced lines); not API Gateway, not time-based charges (shard or stream hours)"
    out["not_priced"] = [k for k, v in lines.items() if v is None]
    out["api_gateway_rest"] = cost(r["api_gateway"]["requests"], "api_gateway_rest_requests")
    out["api_gateway_http"] = cost(r["api_gateway"]["requests"], "api_gateway_http_requests")
    out["naive_dynamodb_writes"] = cost(naive_wcu, "dynamodb_write_request_unit")
    if floor is not None:
        out["floor_dynamodb_writes"] = cost(floor["wcu"], "dynamodb_write_request_unit")
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _money(value: Any) -> str:
    return "not priced" if value is None else f"${value:,.4f}"


def markdown(result: Mapping[str, Any], before: Mapping[str, Any] | None = None, json_path: str = "") -> str:
    ev = result["events"]
    git = result["git"]
    lines = [
        "# Benchmarks",
        "",
        "## Cost per event (`python -m bench.cost`)",
        "",
        f"Measured {result['when']} at commit `{git['commit_short']}` ({git['subject']})"
        + (f", with uncommitted changes to {len(git['uncommitted_changes_outside_bench'])} files"
           if git["uncommitted_changes_outside_bench"] else "")
        + f", by `{result['command']}` on {result['machine']['cpus']} CPUs in {result['timings']['total_seconds']} s. "
        f"Raw figures: `{json_path or 'bench/results/cost.json'}`. Other benchmarks: "
        "`bench/results/local_pipeline.md` (throughput and latency), `bench/results/replay.md` (replay).",
        "",
        f"Events appended: **{ev['appended']:,}** ({', '.join(f'{k} {v:,}' for k, v in ev['by_type'].items())}); "
        f"mean event item {ev['event_item_bytes_mean']} bytes.",
        "",
        "### Method",
        "",
        "- The local runtime runs in the benchmark's process, so every AWS request the real handlers make is "
        "seen by botocore event hooks on their clients, and attributed to the function being invoked (a "
        "context variable set around each invocation by wrapping the runtime's invoke path).",
        "- DynamoDB units as billed: writes 1 per started KB of the item written (the item after an "
        "UpdateItem, the item deleted by a DeleteItem), a transaction's items twice, failed conditional "
        "writes included (minimum 1); reads 1 per started 4 KB, half when eventually consistent, Query and "
        "Scan per page on the summed item size, a missing item at the minimum. Item images are read back "
        "with an uncounted client. Size rule and units: `bench/cost_units.py` (unit-tested).",
        "- Kinesis: each record put (data + partition key) rounded up to 1 KB (on demand) and in 25 KB PUT "
        "payload units (provisioned). Firehose: each record rounded up to 5 KB. Lambda: invocations, and "
        "the CPU time of each invocation's thread rounded up to 1 ms at the function's memory (infra/: "
        + ", ".join(sorted({f"{v} MB" for v in result['memory_mb'].values()}))
        + "). S3: the Firehose emulation's PutObject calls. API Gateway: the HTTP requests sent.",
        "- **Naive baseline**: one PutItem per appended event, at the event item's size, plus one 1-unit "
        "UpdateItem per event per consuming projection (`eventstack/topology.py`: user_profiles consumes "
        "profiles and posts, user_timeline and hashtag_counts consume posts); no transactions, no "
        "de-duplication, so not exactly-once. Same events, same run.",
        "- **Floor**: one write per appended event at its size, plus, per projector batch, the distinct "
        "read-model items the batch changes (folded with the projections' own folds), each at the size of "
        "the item it leaves.",
        "",
    ]
    for name, label in ((REFERENCE, "Reference workload (HTTP API, local batching)"),
                        (FULL_BATCH, "Full-batch variant (batches of "
                         f"{result['config']['batch_size']} records)")):
        w = result["workloads"][name]
        lines += [f"### {label}", "", w["description"] + ".", "",
                  "| function | WCU / 1,000 events | RCU / 1,000 events | invocations | GB-s / 1,000 events |",
                  "|---|---:|---:|---:|---:|"]
        for fname, f in w["functions"].items():
            if not (f["wcu"] or f["rcu"] or f["invocations"] or f["s3_puts"]):
                continue
            gbs = round(1000 * f["gb_seconds"] / w["events"], 4) if w["events"] else 0
            lines.append(f"| {fname} | {_fmt(f['wcu_per_1000_events'])} | {_fmt(f['rcu_per_1000_events'])} | "
                         f"{_fmt(f['invocations'])} | {gbs:.4f} |")
        d = w["dynamodb"]
        lines += [f"| **total** | **{_fmt(d['wcu_per_1000_events'])}** | **{_fmt(d['rcu_per_1000_events'])}** | "
                  f"{_fmt(w['lambda']['invocations'])} | {w['lambda']['gb_seconds_per_1000_events']:.4f} |", ""]
        fl = w.get("floor") or {}
        lines += ["| DynamoDB writes per 1,000 events | WCU | ratio |", "|---|---:|---:|",
                  f"| this stack | {_fmt(d['wcu_per_1000_events'])} | {_fmt(w['ratio_wcu_to_naive'], 2)} x naive |",
                  f"| naive pipeline | {_fmt(w['naive']['wcu_per_1000_events'])} | 1.00 |"]
        if fl:
            lines.append(f"| floor | {_fmt(fl['wcu_per_1000_events'])} | {_fmt(w['ratio_floor_to_naive'], 2)} x naive "
                         f"(this stack is {_fmt(w['ratio_wcu_to_floor'], 2)} x the floor) |")
        k, fh = w["kinesis"], w["firehose"]
        lines += ["", "| other units per 1,000 events | value |", "|---|---:|",
                  f"| Kinesis records | {_fmt(k['records_per_1000_events'])} |",
                  f"| Kinesis on-demand ingest (1 KB rounding), KB | {_fmt(k['on_demand_ingest_kb_per_1000_events'])} |",
                  f"| Kinesis provisioned PUT payload units | {_fmt(k['put_payload_units_per_1000_events'])} |",
                  f"| Firehose ingest (5 KB rounding), KB | {_fmt(fh['billed_kb_per_1000_events'])} |",
                  f"| Lambda invocations | {_fmt(w['lambda']['invocations_per_1000_events'])} |",
                  f"| Lambda GB-seconds | {w['lambda']['gb_seconds_per_1000_events']:.4f} |",
                  f"| S3 PUTs (Firehose objects) | {_fmt(w['s3']['put_requests_per_1000_events'])} |",
                  f"| API Gateway requests (shown apart) | {_fmt(w['api_gateway']['requests_per_1000_events'])} |", ""]
        m = w["dollars_per_million_events"]
        lines += ["| modelled $ per million events | this stack |", "|---|---:|"]
        for key, label2 in (("dynamodb_writes", "DynamoDB writes"), ("dynamodb_reads", "DynamoDB reads"),
                            ("kinesis_provisioned_put_payload_units", "Kinesis PUT payload units (provisioned)"),
                            ("kinesis_on_demand_data_in", "Kinesis on-demand data in"),
                            ("kinesis_on_demand_data_out", "Kinesis on-demand data out"),
                            ("firehose_ingestion", "Firehose ingestion"), ("lambda_requests", "Lambda requests"),
                            ("lambda_duration", "Lambda duration"), ("s3_puts", "S3 PUTs")):
            lines.append(f"| {label2} | {_money(m[key])} |")
        lines += [f"| **total modelled** (the priced lines above) | **{_money(m['total_modelled'])}** |",
                  f"| naive pipeline, DynamoDB writes | {_money(m['naive_dynamodb_writes'])} |"]
        if "floor_dynamodb_writes" in m:
            lines.append(f"| floor, DynamoDB writes | {_money(m['floor_dynamodb_writes'])} |")
        lines += [f"| API Gateway, REST API (apart) | {_money(m['api_gateway_rest'])} |",
                  f"| API Gateway, HTTP API (apart) | {_money(m['api_gateway_http'])} |", "",
                  f"The total covers {m['total_modelled_covers']}; not priced (no trustworthy price in the stored "
                  f"material, see Prices): {', '.join(m['not_priced']) or 'nothing'}.", ""]
    if before:
        lines += before_after(result, before)
    lines += ["### Prices", "", f"us-east-1, read {result['prices']['read_on']} from stored copies of the pages "
              "(`bench/prices.toml` has the exact text each says). *secondary*: AWS's stored page has the unit "
              "but not the number, which comes from the third-party page named; *not found*: no trustworthy "
              "number in the stored material, so the line is not priced.", "",
              "| price | $ | per | status | AWS page | number from |", "|---|---:|---|---|---|---|"]
    for p in result["prices"]["prices"].values():
        usd = f"{p['usd']:.10f}".rstrip("0").rstrip(".") if "usd" in p else "—"
        per = f"{p.get('per', 1):,} {p['unit']}" if "usd" in p else p["unit"]
        source = p.get("source_url", "") if p["status"] == "secondary" else ("AWS page" if p["status"] == "first_party" else "—")
        lines.append(f"| {p['service']}: {p['item']} | {usd} | {per} | {p['status'].replace('_', ' ')} | "
                     f"{p['aws_url']} | {source} |")
    lines += ["", "### Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    return "\n".join(lines)


def before_after(result: Mapping[str, Any], before: Mapping[str, Any]) -> list[str]:
    lines = [f"### Before and after (before: `{before['git']['commit_short']}`, measured {before['when']})", ""]
    for name in (REFERENCE, FULL_BATCH):
        a, b = result["workloads"][name], before["workloads"].get(name)
        if not b:
            continue
        lines += [f"{name.replace('_', ' ')}:", "",
                  "| function | WCU / 1,000 before | after | RCU / 1,000 before | after |", "|---|---:|---:|---:|---:|"]
        for fname in list(dict.fromkeys([*b["functions"], *a["functions"]])):
            fa, fb = a["functions"].get(fname, {}), b["functions"].get(fname, {})
            if not any(x.get(k) for x in (fa, fb) for k in ("wcu", "rcu")):
                continue
            lines.append(f"| {fname} | {_fmt(fb.get('wcu_per_1000_events'))} | {_fmt(fa.get('wcu_per_1000_events'))} | "
                         f"{_fmt(fb.get('rcu_per_1000_events'))} | {_fmt(fa.get('rcu_per_1000_events'))} |")
        lines += [f"| **total** | {_fmt(b['dynamodb']['wcu_per_1000_events'])} | {_fmt(a['dynamodb']['wcu_per_1000_events'])} | "
                  f"{_fmt(b['dynamodb']['rcu_per_1000_events'])} | {_fmt(a['dynamodb']['rcu_per_1000_events'])} |",
                  f"| naive | {_fmt(b['naive']['wcu_per_1000_events'])} | {_fmt(a['naive']['wcu_per_1000_events'])} | | |",
                  f"| ratio to naive | {_fmt(b['ratio_wcu_to_naive'], 2)} | {_fmt(a['ratio_wcu_to_naive'], 2)} | | |",
                  f"| $ per million events, modelled | {_money(b['dollars_per_million_events']['total_modelled'])} | "
                  f"{_money(a['dollars_per_million_events']['total_modelled'])} | | |", ""]
    return lines


def write(result: Mapping[str, Any], out: Path, md: Path | None, before: Mapping[str, Any] | None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    if md is not None:
        try:
            shown = str(out.resolve().relative_to(REPO))
        except ValueError:
            shown = str(out)
        md.write_text(markdown(result, before, shown))


def _json_default(value: Any) -> Any:
    if isinstance(value, Counter | dict):
        return dict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def headline(result: Mapping[str, Any]) -> Iterator[str]:
    yield f"commit {result['git']['commit_short']}: {result['events']['appended']:,} events"
    for name in (REFERENCE, FULL_BATCH):
        w = result["workloads"][name]
        yield (f"{name}: {w['dynamodb']['wcu_per_1000_events']:,.1f} WCU and {w['dynamodb']['rcu_per_1000_events']:,.1f} "
               f"RCU per 1,000 events; naive {w['naive']['wcu_per_1000_events']:,.1f} "
               f"({w['ratio_wcu_to_naive']:.2f} x); floor {w['floor']['wcu_per_1000_events']:,.1f}; "
               f"${w['dollars_per_million_events']['total_modelled']:.2f} per million events modelled")
        for fname, f in w["functions"].items():
            if f["wcu"] or f["rcu"]:
                yield f"    {fname:28s} {f['wcu_per_1000_events']:10,.1f} WCU {f['rcu_per_1000_events']:10,.1f} RCU"
