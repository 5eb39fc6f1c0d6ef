"""What the cost benchmark measures the stack against, and its full-batch variant.

- Reading back what the reference workload left: the event items of each store (`scan_events`), the
  records of each Kinesis stream as Lambda delivers them (`stream_records`), their envelopes.
- The **floor** (`floor_changed_items`): per projector batch, the distinct read-model items the batch
  changes, each at the size of the item it leaves, folded with the projections' own folds. (The
  naive baseline is a unit rule: bench.cost_units.naive_write_units.)
- The **full-batch variant** (`run_full_batch`): the same records fed to fresh projection tables by
  the real projector handlers, BATCH records per invocation, as a Kinesis mapping with
  ReportBatchItemFailures delivers them (`feed`).
"""

from __future__ import annotations

import base64
import copy
import importlib
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from bench import cost_units as units
from bench.cost_hooks import Images
from bench.cost_ledger import FULL_BATCH, REFERENCE, Ledger, measured


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


def _upcast(event: Any) -> Any:
    try:
        from escore.upcasting import upcasters

        return upcasters.upcast(event)
    except Exception:
        return event


def floor_changed_items(spec: Any, batches: list[list[Any]]) -> list[int]:
    """Per batch, the read-model items the batch leaves changed, each at its resulting size (a
    deleted item at the size it had). Folds with `InMemoryProjection` (the projection's own folds)."""
    from escore.memory_projection import InMemoryProjection
    from escore.projection import ProjectionSpec

    touched: dict[tuple[str, str], dict[str, Any] | None] = {}
    projection: Any = None

    def wrap(fold: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(state: Any, event: Any, envelope: Any) -> Any:
            new_state, writes = fold(state, event, envelope)
            for write in writes:
                if write.key not in touched:
                    touched[write.key] = copy.deepcopy(projection.items.get(write.key))
            return new_state, writes

        return wrapped

    projection = InMemoryProjection(ProjectionSpec(spec.name, {t: wrap(f) for t, f in spec.folds.items()}))
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
        module = importlib.import_module(plan.handler.rpartition(".")[0])  # the core's projector handler
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
