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

    python -m bench.cost [--users 200] [--posts 2000] [--clients 8] [--seed 1] [--out PATH] [--md PATH]
"""

from __future__ import annotations

import argparse
import ast
import base64
import contextvars
import copy
import importlib
import json
import logging
import os
import platform
import random
import re
import socket
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PRICES = Path(__file__).resolve().parent / "prices.toml"
if str(REPO / "lambdas") not in sys.path:  # the functions' asset root, as pytest's pythonpath has it
    sys.path.insert(0, str(REPO / "lambdas"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import cost_units as units  # noqa: E402
from bench.local_pipeline import call as local_pipeline_call  # noqa: E402

log = logging.getLogger("bench.cost")

REFERENCE, FULL_BATCH = "reference", "full_batch"
GB = 1024**3
DEFAULT_MEMORY_MB = 256

# --- attribution ---------------------------------------------------------------------------

_FUNCTION: contextvars.ContextVar[str | None] = contextvars.ContextVar("bench_cost_function", default=None)
FIREHOSE = "firehose (emulated)"
UNATTRIBUTED = "unattributed"


class Ledger:
    """Every counted unit, by workload and by function. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.workload = REFERENCE
        self.data: dict[str, dict[str, dict[str, Any]]] = defaultdict(lambda: defaultdict(_new_entry))
        self.batches: dict[str, dict[str, list[list[dict[str, Any]]]]] = defaultdict(lambda: defaultdict(list))
        self.api_requests: Counter[str] = Counter()

    def entry(self, function: str | None) -> dict[str, Any]:
        return self.data[self.workload][function or UNATTRIBUTED]

    def dynamodb(self, function: str | None, operation: str, wcu: float, rcu: float, *,
                 transact_items: int = 0, failed_condition: bool = False) -> None:
        with self._lock:
            e = self.entry(function)
            e["wcu"] += wcu
            e["rcu"] += rcu
            op = e["dynamodb_requests"].setdefault(operation, {"requests": 0, "wcu": 0.0, "rcu": 0.0})
            op["requests"] += 1
            op["wcu"] += wcu
            op["rcu"] += rcu
            e["transact_items"] += transact_items
            if failed_condition:
                e["failed_conditional_writes"] += 1

    def kinesis(self, function: str | None, stream: str, records: list[tuple[int, int]]) -> None:
        """records: (data bytes, partition key bytes) of each record the stream accepted."""
        with self._lock:
            k = self.entry(function)["kinesis"]
            for data, key in records:
                size = data + key
                k["records"] += 1
                k["bytes"] += size
                k["data_bytes"] += data
                k["on_demand_kb"] += units.kinesis_on_demand_kb(size)
                k["put_payload_units"] += units.kinesis_put_payload_units(size)
                k["firehose_billed_bytes"] += units.firehose_billed_bytes(data)
                k["by_stream"][stream] = k["by_stream"].get(stream, 0) + 1
                k["data_bytes_by_stream"][stream] = k["data_bytes_by_stream"].get(stream, 0) + data

    def invocation(self, function: str, cpu_seconds: float) -> None:
        with self._lock:
            e = self.entry(function)
            e["invocations"] += 1
            e["cpu_seconds"] += cpu_seconds
            e["billed_ms"] += units.lambda_billed_ms(cpu_seconds)

    def request(self, function: str | None, service: str, operation: str) -> None:
        with self._lock:
            self.entry(function)["requests"][f"{service}:{operation}"] += 1

    def s3_put(self, function: str) -> None:
        with self._lock:
            self.entry(function)["s3_puts"] += 1

    def batch(self, function: str, records: list[dict[str, Any]]) -> None:
        with self._lock:
            self.batches[self.workload][function].append(records)

    def api_request(self) -> None:
        with self._lock:
            self.api_requests[self.workload] += 1


def _new_entry() -> dict[str, Any]:
    return {
        "wcu": 0.0, "rcu": 0.0, "dynamodb_requests": {}, "transact_items": 0, "failed_conditional_writes": 0,
        "invocations": 0, "cpu_seconds": 0.0, "billed_ms": 0, "s3_puts": 0, "requests": Counter(),
        "kinesis": {"records": 0, "bytes": 0, "data_bytes": 0, "on_demand_kb": 0, "put_payload_units": 0,
                    "firehose_billed_bytes": 0, "by_stream": {}, "data_bytes_by_stream": {}},
    }


# --- the uncounted client: item images for the size rules -----------------------------------


class Images:
    """Reads items with a client of the benchmark's own (its own botocore session: never counted)."""

    def __init__(self, endpoint_url: str) -> None:
        import boto3

        session = boto3.session.Session()
        kwargs = dict(endpoint_url=endpoint_url, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
        from botocore.config import Config

        config = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32)
        self.dynamodb = session.client("dynamodb", config=config, **kwargs)
        self.kinesis = session.client("kinesis", config=config, **kwargs)
        self._schemas: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def key_names(self, table: str) -> list[str]:
        with self._lock:
            if table not in self._schemas:
                described = self.dynamodb.describe_table(TableName=table)["Table"]
                self._schemas[table] = [k["AttributeName"] for k in described["KeySchema"]]
            return self._schemas[table]

    def key_of(self, table: str, item: Mapping[str, Any]) -> dict[str, Any] | None:
        names = self.key_names(table)
        if not all(n in item for n in names):
            return None
        return {n: item[n] for n in names}

    def get_many(self, table: str, keys: list[Mapping[str, Any]]) -> dict[str, dict[str, Any] | None]:
        """key string -> the full item now (None when absent)."""
        out: dict[str, dict[str, Any] | None] = {key_string(k): None for k in keys}
        unique = list({key_string(k): k for k in keys}.values())
        for start in range(0, len(unique), 100):
            request: dict[str, Any] = {table: {"Keys": unique[start:start + 100], "ConsistentRead": True}}
            for _ in range(20):
                answer = self.dynamodb.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(table, []):
                    key = self.key_of(table, item)
                    if key is not None:
                        out[key_string(key)] = item
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
        return out

    def get(self, table: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        return self.get_many(table, [key])[key_string(key)]

    def pages(self, operation: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The items one Query/Scan page read, in full: the same request without projection or filter."""
        request = {k: v for k, v in params.items()
                   if k in ("TableName", "IndexName", "KeyConditionExpression", "KeyConditions",
                            "ExclusiveStartKey", "Limit", "ScanIndexForward", "ConsistentRead", "Segment",
                            "TotalSegments", "ExpressionAttributeNames", "ExpressionAttributeValues")}
        used = set(re.findall(r"[#:][A-Za-z0-9_]+", str(request.get("KeyConditionExpression", ""))))
        if "ExpressionAttributeNames" in request:
            names = {k: v for k, v in request["ExpressionAttributeNames"].items() if k in used}
            request["ExpressionAttributeNames"] = names
            if not names:
                request.pop("ExpressionAttributeNames")
        if "ExpressionAttributeValues" in request:
            values = {k: v for k, v in request["ExpressionAttributeValues"].items() if k in used}
            request["ExpressionAttributeValues"] = values
            if not values:
                request.pop("ExpressionAttributeValues")
        call = self.dynamodb.query if operation == "Query" else self.dynamodb.scan
        items: list[dict[str, Any]] = call(**request).get("Items", [])
        return items


def key_string(key: Mapping[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, default=str)


# --- the hooks --------------------------------------------------------------------------------

_STATE = "_bench_cost"


class Hooks:
    """botocore handlers on the handlers' session: parameters in, units out."""

    def __init__(self, ledger: Ledger, images: Images) -> None:
        self.ledger = ledger
        self.images = images
        self.errors: Counter[str] = Counter()

    def install(self, events: Any) -> None:
        events.register("provide-client-params", self.provide_params, unique_id="bench-cost-params")
        events.register("after-call", self.after_call, unique_id="bench-cost-after")

    def uninstall(self, events: Any) -> None:
        events.unregister("provide-client-params", unique_id="bench-cost-params")
        events.unregister("after-call", unique_id="bench-cost-after")

    # -- before the request -------------------------------------------------------------------
    def provide_params(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        service = model.service_model.service_name
        if service not in ("dynamodb", "kinesis"):
            return
        state: dict[str, Any] = {"params": dict(params), "injected": False, "before": {}}
        context[_STATE] = state
        if service != "dynamodb":
            return
        try:
            op = model.name
            if op == "UpdateItem" and params.get("ReturnValues", "NONE") == "NONE":
                params["ReturnValues"] = "ALL_NEW"
                state["injected"] = True
            elif op == "DeleteItem" and params.get("ReturnValues", "NONE") == "NONE":
                params["ReturnValues"] = "ALL_OLD"
                state["injected"] = True
            elif op == "TransactWriteItems":
                state["before"] = self._transact_before(params.get("TransactItems") or [])
            elif op == "BatchWriteItem":
                state["before"] = self._batch_write_before(params.get("RequestItems") or {})
        except Exception as exc:  # never break the handler being measured
            self.errors[f"params:{type(exc).__name__}"] += 1
            log.debug("provide-client-params hook failed", exc_info=True)

    def _transact_before(self, items: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
        wanted: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for entry in items:
            ((kind, op),) = entry.items()
            if kind != "Put":
                wanted[op["TableName"]].append(op["Key"])
        found: dict[str, dict[str, Any] | None] = {}
        for table, keys in wanted.items():
            for k, v in self.images.get_many(table, keys).items():
                found[table + "|" + k] = v
        return found

    def _batch_write_before(self, requests: Mapping[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any] | None]:
        found: dict[str, dict[str, Any] | None] = {}
        for table, writes in requests.items():
            keys = [w["DeleteRequest"]["Key"] for w in writes if "DeleteRequest" in w]
            if keys:
                for k, v in self.images.get_many(table, keys).items():
                    found[table + "|" + k] = v
        return found

    # -- after the answer ---------------------------------------------------------------------
    def after_call(self, http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any],
                   **_: Any) -> None:
        function = _FUNCTION.get()
        service = model.service_model.service_name
        op = model.name
        self.ledger.request(function, service, op)
        state = context.get(_STATE) or {}
        try:
            status = getattr(http_response, "status_code", 200)
            if service == "dynamodb":
                self._dynamodb(function, op, state, parsed, status)
            elif service == "kinesis" and status < 300 and op in ("PutRecords", "PutRecord"):
                self._kinesis(function, op, state.get("params") or {}, parsed)
        except Exception as exc:
            self.errors[f"{service}:{op}:{type(exc).__name__}"] += 1
            log.debug("after-call hook failed on %s %s", service, op, exc_info=True)
        if state.get("injected"):
            parsed.pop("Attributes", None)  # the caller asked for no return values: it gets none

    def _kinesis(self, function: str | None, op: str, params: Mapping[str, Any], parsed: Mapping[str, Any]) -> None:
        stream = str(params.get("StreamName") or params.get("StreamARN") or "?").rsplit("/", 1)[-1]
        accepted: list[tuple[int, int]] = []
        if op == "PutRecord":
            accepted.append((_blob_len(params.get("Data")), len(str(params.get("PartitionKey", "")).encode())))
        else:
            for record, outcome in zip(params.get("Records") or [], parsed.get("Records") or [], strict=False):
                if not outcome.get("ErrorCode"):
                    accepted.append((_blob_len(record.get("Data")), len(str(record.get("PartitionKey", "")).encode())))
        self.ledger.kinesis(function, stream, accepted)

    def _dynamodb(self, function: str | None, op: str, state: Mapping[str, Any], parsed: dict[str, Any],
                  status: int) -> None:
        params: Mapping[str, Any] = state.get("params") or {}
        code = (parsed.get("Error") or {}).get("Code", "") if status >= 300 else ""
        condition_failed = code in ("ConditionalCheckFailedException", "TransactionCanceledException")
        if status >= 300 and not condition_failed:
            self.ledger.dynamodb(function, op, 0.0, 0.0)  # refused before any work: not billed
            return
        images = self.images
        wcu = rcu = 0.0
        transact_items = 0
        if op == "PutItem":
            if condition_failed:
                existing = parsed.get("Item") or images.get(params["TableName"], images.key_of(params["TableName"], params["Item"]) or {})
                wcu = units.write_units(units.item_size(existing))
            else:
                wcu = units.write_units(units.item_size(params["Item"]))
        elif op == "UpdateItem":
            if condition_failed:
                wcu = units.write_units(units.item_size(images.get(params["TableName"], params["Key"])))
            else:
                after = parsed.get("Attributes") if state.get("injected") else images.get(params["TableName"], params["Key"])
                wcu = units.write_units(units.item_size(after))
        elif op == "DeleteItem":
            if condition_failed:
                wcu = units.write_units(units.item_size(images.get(params["TableName"], params["Key"])))
            else:
                wcu = units.write_units(units.item_size(parsed.get("Attributes")))
        elif op == "TransactWriteItems":
            items = params.get("TransactItems") or []
            before: Mapping[str, Any] = state.get("before") or {}
            after: dict[str, Any] = {}
            if not condition_failed:
                updates: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
                for entry in items:
                    if "Update" in entry:
                        updates[entry["Update"]["TableName"]].append(entry["Update"]["Key"])
                for table, keys in updates.items():
                    for k, v in images.get_many(table, keys).items():
                        after[table + "|" + k] = v
            sizes = []
            for entry in items:
                ((kind, body),) = entry.items()
                if kind == "Put":
                    sizes.append(units.item_size(body["Item"]))
                    continue
                ref = body["TableName"] + "|" + key_string(body["Key"])
                image = after.get(ref) if kind == "Update" and not condition_failed else before.get(ref)
                sizes.append(units.item_size(image))
            wcu = units.transact_write_units(sizes)
            transact_items = len(items)
        elif op == "BatchWriteItem":
            unprocessed = {table: {json.dumps(w, sort_keys=True, default=str) for w in writes}
                           for table, writes in (parsed.get("UnprocessedItems") or {}).items()}
            before = state.get("before") or {}
            sizes = []
            for table, writes in (params.get("RequestItems") or {}).items():
                for w in writes:
                    if json.dumps(w, sort_keys=True, default=str) in unprocessed.get(table, set()):
                        continue
                    if "PutRequest" in w:
                        sizes.append(units.item_size(w["PutRequest"]["Item"]))
                    else:
                        sizes.append(units.item_size(before.get(table + "|" + key_string(w["DeleteRequest"]["Key"]))))
            wcu = units.batch_write_units(sizes)
        elif op == "GetItem":
            item = parsed.get("Item")
            if item and (params.get("ProjectionExpression") or params.get("AttributesToGet")):
                item = images.get(params["TableName"], params["Key"])
            rcu = units.read_units(units.item_size(item), bool(params.get("ConsistentRead")))
        elif op == "BatchGetItem":
            rcu = self._batch_get(params, parsed)
        elif op in ("Query", "Scan"):
            consistent = bool(params.get("ConsistentRead"))
            if any(params.get(k) for k in ("ProjectionExpression", "FilterExpression", "AttributesToGet",
                                           "QueryFilter", "ScanFilter")) or params.get("Select") == "COUNT":
                items = images.pages(op, params)
            else:
                items = parsed.get("Items") or []
            rcu = units.page_read_units([units.item_size(i) for i in items], consistent)
        elif op == "TransactGetItems":
            sizes = []
            for entry in params.get("TransactItems") or []:
                get = entry["Get"]
                sizes.append(units.item_size(images.get(get["TableName"], get["Key"])))
            rcu = units.transact_read_units(sizes)
            transact_items = len(sizes)
        self.ledger.dynamodb(function, op, float(wcu), float(rcu), transact_items=transact_items,
                             failed_condition=condition_failed)

    def _batch_get(self, params: Mapping[str, Any], parsed: Mapping[str, Any]) -> float:
        images = self.images
        total = 0.0
        unprocessed = parsed.get("UnprocessedKeys") or {}
        for table, request in (params.get("RequestItems") or {}).items():
            consistent = bool(request.get("ConsistentRead"))
            skipped = {key_string(k) for k in (unprocessed.get(table) or {}).get("Keys", [])}
            keys = [k for k in request.get("Keys", []) if key_string(k) not in skipped]
            if request.get("ProjectionExpression") or request.get("AttributesToGet"):
                found = images.get_many(table, keys)
            else:
                found = {key_string(k): None for k in keys}
                for item in (parsed.get("Responses") or {}).get(table, []):
                    key = images.key_of(table, item)
                    if key is not None:
                        found[key_string(key)] = item
            total += sum(units.read_units(units.item_size(found.get(key_string(k))), consistent) for k in keys)
        return total


def _blob_len(data: Any) -> int:
    if data is None:
        return 0
    if isinstance(data, str):
        return len(data.encode())
    return len(data)


# --- wrapping the local runtime ----------------------------------------------------------------


@dataclass
class Patches:
    undo: list[Callable[[], None]] = field(default_factory=list)

    def set(self, owner: Any, name: str, value: Any) -> None:
        original = getattr(owner, name)
        setattr(owner, name, value)
        self.undo.append(lambda: setattr(owner, name, original))

    def restore(self) -> None:
        while self.undo:
            self.undo.pop()()


def measured(ledger: Ledger, function: str, call: Callable[[], Any]) -> Any:
    """Run one invocation of `function`: its AWS requests attributed to it, its thread's CPU counted."""
    token = _FUNCTION.set(function)
    started = time.thread_time()
    try:
        return call()
    finally:
        ledger.invocation(function, time.thread_time() - started)
        _FUNCTION.reset(token)


def patch_runtime(patches: Patches, ledger: Ledger, projector_functions: set[str]) -> None:
    from eventstack.local import emulation, functions

    original_invoke = functions.Function.invoke

    def invoke(self: Any, event: dict[str, Any]) -> Any:
        if self.name in projector_functions:
            ledger.batch(self.name, list(event.get("Records") or []))
        return measured(ledger, self.name, lambda: original_invoke(self, event))

    patches.set(functions.Function, "invoke", invoke)

    original_make_client = emulation.make_client

    def make_client(service: str, endpoint_url: str) -> Any:
        client = original_make_client(service, endpoint_url)
        if service == "s3":
            def put(http_response: Any, **_: Any) -> None:
                if getattr(http_response, "status_code", 500) < 300:
                    ledger.s3_put(FIREHOSE)

            client.meta.events.register("after-call.s3.PutObject", put, unique_id="bench-cost-s3")
        return client

    patches.set(emulation, "make_client", make_client)


# --- the reference workload --------------------------------------------------------------------

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "river", "stones",
         "hum", "under", "bright", "morning", "light", "and", "every", "small", "harbor", "keeps", "its",
         "boats", "close", "to", "shore", "before", "winter", "storms", "arrive", "bringing", "news", "of",
         "distant", "cities", "markets", "songs", "old", "friends"]
TAGS = ["python", "aws", "serverless", "music", "food", "travel", "news", "sports", "art", "books",
        "coffee", "photography", "science", "climate", "cats", "dogs", "running", "cycling", "movies",
        "design", "startup", "data", "cloud", "events", "weekend", "family", "garden", "history",
        "space", "gaming", "jazz", "health", "tech", "writing", "cooking", "hiking", "ocean", "city",
        "friends", "learning"]


def zipf_weights(n: int, s: float) -> list[float]:
    return [1.0 / (rank**s) for rank in range(1, n + 1)]


def post_text(rng: random.Random, tag_weights: list[float], tag_fraction: float) -> str:
    words = rng.choices(WORDS, k=rng.randint(6, 30))
    if rng.random() < tag_fraction:
        tags = set()
        for _ in range(rng.randint(1, 3)):
            tags.add(rng.choices(TAGS, weights=tag_weights)[0])
        for tag in sorted(tags):
            words.insert(rng.randint(0, len(words)), f"#{tag}")
    return " ".join(words).capitalize()[:2000]


@dataclass
class Plan:
    users: int
    posts: int
    authors: list[int]
    texts: list[str]
    edits: dict[int, str]  # post index -> new text
    deletes: set[int]
    renames: dict[int, str]  # user index -> new display name
    ops: list[tuple[str, int]]  # ("create" | "edit" | "delete" | "rename", index), in the order sent


def make_plan(users: int, posts: int, seed: int, tag_fraction: float = 0.6) -> Plan:
    rng = random.Random(seed)
    ranks = list(range(users))
    rng.shuffle(ranks)  # who is popular is random; how popular follows Zipf(1.1)
    weights = [0.0] * users
    for rank, w in zip(ranks, zipf_weights(users, 1.1), strict=True):
        weights[rank] = w
    authors = rng.choices(range(users), weights=weights, k=posts)
    tag_weights = zipf_weights(len(TAGS), 1.0)
    texts = [post_text(rng, tag_weights, tag_fraction) for _ in range(posts)]
    edited = sorted(rng.sample(range(posts), posts // 5))
    edits = {i: post_text(rng, tag_weights, tag_fraction) for i in edited}
    deletes = set(rng.sample(range(posts), posts // 10))
    renames = {u: f"{rng.choice(WORDS).capitalize()} {rng.choice(WORDS).capitalize()}"
               for u in sorted(rng.sample(range(users), users // 4))}
    timeline: list[tuple[float, int, str, int]] = []
    order = 0
    for i in range(posts):
        timeline.append((float(i), order, "create", i))
        order += 1
        last = float(i)
        if i in edits:
            last = rng.uniform(last, posts)
            timeline.append((last, order, "edit", i))
            order += 1
        if i in deletes:
            timeline.append((rng.uniform(last, posts + 1), order, "delete", i))
            order += 1
    for u in renames:
        timeline.append((rng.uniform(0, posts), order, "rename", u))
        order += 1
    timeline.sort()
    return Plan(users, posts, authors, texts, edits, deletes, renames, [(kind, i) for _, _, kind, i in timeline])


http = local_pipeline_call  # one HTTP helper for the benchmarks (bench.local_pipeline.call)


class Clients:
    """CLIENTS threads sending the plan's commands in order, each waiting for what its command needs."""

    def __init__(self, api: str, plan: Plan, ledger: Ledger, clients: int) -> None:
        self.api, self.plan, self.ledger, self.clients = api, plan, ledger, clients
        self.user_ids: list[str | None] = [None] * plan.users
        self.post_ids: list[str | None] = [None] * plan.posts
        self.created = [threading.Event() for _ in range(plan.posts)]
        self.edited = [threading.Event() for _ in range(plan.posts)]
        self.answers: Counter[str] = Counter()
        self._lock = threading.Lock()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        self.ledger.api_request()
        status, answer = http(self.api, method, path, body)
        with self._lock:
            self.answers["2xx" if 200 <= status < 300 else str(status)] += 1
        return status, answer

    def run(self, ops: list[tuple[str, int]]) -> None:
        position = [0]
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    if position[0] >= len(ops):
                        return
                    op = ops[position[0]]
                    position[0] += 1
                self.do(*op)

        threads = [threading.Thread(target=worker, name=f"bench-client-{i}") for i in range(self.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def register_all(self) -> None:
        self.run([("register", u) for u in range(self.plan.users)])

    def do(self, kind: str, i: int) -> None:
        plan = self.plan
        if kind == "register":
            status, body = self.call("POST", "/users", {"handle": f"u{i:04d}_{uuid.uuid4().hex[:8]}",
                                                        "display_name": f"User {i}"})
            if status == 201:
                self.user_ids[i] = body["user_id"]
        elif kind == "rename":
            if self.user_ids[i] is not None:
                self.call("PATCH", f"/users/{self.user_ids[i]}", {"display_name": plan.renames[i], "expected_version": 1})
        elif kind == "create":
            try:
                author = self.user_ids[plan.authors[i]]
                if author is not None:
                    status, body = self.call("POST", "/posts", {"author_id": author, "text": plan.texts[i]})
                    if status == 201:
                        self.post_ids[i] = body["post_id"]
            finally:
                self.created[i].set()
        elif kind == "edit":
            try:
                self.created[i].wait(300)
                if self.post_ids[i] is not None:
                    self.call("PATCH", f"/posts/{self.post_ids[i]}", {"text": plan.edits[i], "expected_version": 1})
            finally:
                self.edited[i].set()
        elif kind == "delete":
            self.created[i].wait(300)
            version = 1
            if i in plan.edits:
                self.edited[i].wait(300)
                version = 2
            if self.post_ids[i] is not None:
                self.call("DELETE", f"/posts/{self.post_ids[i]}?expected_version={version}")


# --- reading back -----------------------------------------------------------------------------


def scan_events(images: Images, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = images.dynamodb.scan(**kwargs)
        items.extend(i for i in page["Items"] if i.get("kind", {}).get("S") == "event")
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def stream_records(images: Images, stream: str) -> list[dict[str, Any]]:
    """Every record of a Kinesis stream as Lambda delivers it, shard by shard (parents first)."""
    from eventstack.local.sources import KinesisSource

    arn = images.kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    source = KinesisSource(images.kinesis, stream, arn)
    shards = source.list_shards()
    done: set[str] = set()
    ordered = []
    while len(ordered) < len(shards):
        progressed = False
        for shard in shards:
            if shard.shard_id not in done and all(p in done or p not in {s.shard_id for s in shards}
                                                  for p in shard.parents):
                ordered.append(shard)
                done.add(shard.shard_id)
                progressed = True
        if not progressed:
            ordered.extend(s for s in shards if s.shard_id not in done)
            break
    records: list[dict[str, Any]] = []
    for shard in ordered:
        iterator: str | None = source.iterator(shard.shard_id, None, "TRIM_HORIZON")
        for _ in range(10_000):
            if iterator is None:
                break
            page, iterator = source.read(shard.shard_id, iterator, 10_000)
            if not page:
                break
            records.extend(r.event for r in page)
    return records


def envelopes_of(records: list[dict[str, Any]]) -> list[Any]:
    from escore.envelope import decode

    out = []
    for record in records:
        try:
            out.append(decode(base64.b64decode(record["kinesis"]["data"])))
        except Exception:
            continue
    return out


# --- the floor -------------------------------------------------------------------------------


def _upcast(event: Any) -> Any:
    try:
        from escore.upcasting import upcasters

        return upcasters.upcast(event)
    except Exception:
        return event


def floor_changed_items(spec: Any, batches: list[list[Any]]) -> list[int]:
    """Per batch, the read-model items the batch leaves changed, each at its resulting size (a
    deleted item at the size it had). Folds with `InMemoryProjection` (the projection's own folds)."""
    from escore.projection import InMemoryProjection

    touched: dict[tuple[str, str], dict[str, Any] | None] = {}
    projection: Any = None

    def wrap(fold: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(state: Any, event: Any) -> Any:
            new_state, writes = fold(state, event)
            for write in writes:
                if write.key not in touched:
                    touched[write.key] = copy.deepcopy(projection.items.get(write.key))
            return new_state, writes

        return wrapped

    projection = InMemoryProjection(SimpleNamespace(name=spec.name, folds={t: wrap(f) for t, f in spec.folds.items()}))
    seen: set[tuple[str, int]] = set()
    sizes: list[int] = []
    for batch in batches:
        touched.clear()
        fresh = []
        for event in batch:
            if (event.stream_id, event.version) in seen:
                continue  # a re-delivery: the fold applies each event once
            seen.add((event.stream_id, event.version))
            fresh.append(_upcast(event))
        # a stream's events in version order within the batch, as the engine applies them
        fresh.sort(key=lambda e: (e.stream_id, e.version))
        projection.apply(fresh)
        for key, before in touched.items():
            after = projection.items.get(key)
            if after == before:
                continue
            image = after if after is not None else before
            sizes.append(units.plain_item_size({"pk": key[0], "sk": key[1], **(image or {})}))
    return sizes


# --- the full-batch variant ------------------------------------------------------------------


def run_full_batch(runtime: Any, ledger: Ledger, images: Images, records_by_service: Mapping[str, list[dict[str, Any]]],
                   batch_size: int) -> dict[str, Any]:
    from eventstack.topology import TOPOLOGY

    ledger.workload = FULL_BATCH
    info: dict[str, Any] = {}
    for _service, projection in TOPOLOGY.projections:
        plan = runtime.plan.function(projection.function_name)
        live = runtime.plan.table_names.get(projection.name, projection.name)
        table = f"{live}-fullbatch"
        described = images.dynamodb.describe_table(TableName=live)["Table"]
        images.dynamodb.create_table(TableName=table, KeySchema=described["KeySchema"],
                                     AttributeDefinitions=described["AttributeDefinitions"],
                                     BillingMode="PAY_PER_REQUEST")
        env = {k: (table if v == live else v) for k, v in plan.env.items() if not k.endswith("_PARAMETER")}
        module = importlib.import_module(plan.handler.rpartition(".")[0])
        per_source = [[records_by_service[s][i:i + batch_size] for i in range(0, len(records_by_service[s]), batch_size)]
                      for s in projection.sources]
        batches: list[list[dict[str, Any]]] = []
        for round_ in range(max((len(b) for b in per_source), default=0)):
            batches.extend(b[round_] for b in per_source if round_ < len(b))
        retries, failures_reported = feed(ledger, plan, module.build, env, batches)
        info[projection.name] = {"table": table, "batches": len(batches), "records": sum(len(b) for b in batches),
                                 "retried_invocations": retries, "batches_with_failures": failures_reported}
    ledger.workload = REFERENCE
    return info


def feed(ledger: Ledger, plan: Any, build: Callable[..., Any], env: Mapping[str, str],
         batches: list[list[dict[str, Any]]]) -> tuple[int, int]:
    """Invoke one projector on each batch, as a Kinesis mapping with ReportBatchItemFailures does
    (again from the lowest failed record); the instance is built in its first invocation (a cold start)."""
    from eventstack.local.functions import LambdaContext

    handler: list[Any] = []
    retries = failures_reported = 0

    def call(batch: list[dict[str, Any]]) -> Any:
        if not handler:
            handler.append(build(env))
        context = LambdaContext(function_name=plan.name, aws_request_id=str(uuid.uuid4()),
                                invoked_function_arn=plan.arn, started=time.monotonic())
        return handler[0]({"Records": batch}, context)

    for batch in batches:
        ledger.batch(plan.name, batch)
        pending = batch
        for _attempt in range(10):
            answer = measured(ledger, plan.name, lambda b=pending: call(b))  # type: ignore[misc]
            failed = [f.get("itemIdentifier") for f in (answer or {}).get("batchItemFailures", [])]
            if not failed:
                break
            failures_reported += 1
            index = {r["kinesis"]["sequenceNumber"]: n for n, r in enumerate(pending)}
            pending = pending[min(index.get(f, 0) for f in failed):]
            retries += 1
    return retries, failures_reported


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


# --- results --------------------------------------------------------------------------------


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
            module = importlib.import_module(projection.handler.rpartition(".")[0])
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


# --- output -------------------------------------------------------------------------------


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
