"""The cost benchmark's counting (bench/cost.py): every unit, attributed to the function that caused it.

A `Ledger` holds what was counted, per workload and per function; `measured` runs one invocation
with its AWS requests attributed to its function (a context variable the botocore hooks of
bench.cost_hooks read) and its thread's CPU time counted; `patch_runtime` wraps the local runtime's
invoke path and the Firehose emulation's S3 client so that every invocation and S3 PUT is counted.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import cost_units as units

REFERENCE, FULL_BATCH = "reference", "full_batch"
FIREHOSE = "firehose (emulated)"
UNATTRIBUTED = "unattributed"

_FUNCTION: contextvars.ContextVar[str | None] = contextvars.ContextVar("bench_cost_function", default=None)


def current_function() -> str | None:
    """The function whose invocation is running in this context (None outside any)."""
    return _FUNCTION.get()


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
