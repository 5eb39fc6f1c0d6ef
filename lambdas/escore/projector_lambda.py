"""The projector Lambda: a Kinesis event source mapping with ReportBatchItemFailures, over escore.engine.

The whole batch goes through `Projector.apply` at once (coalescing per item, one request per item),
so the response is built here rather than by Powertools' per-record BatchProcessor. Each record is
a `Delivery` in the namespace of its shard (`<stream name>:<shard number>`) at its sequence number.
Every record of a failed event, every undecodable record and every record after one of those in
its shard is reported by its sequence number; Lambda re-delivers from the lowest, and the items'
watermarks and versions make the part already written a no-op.

Two additions for replay and redrive (docs/replay.md):
- the **gate** (`escore.control.Gate`): before anything is written, the batch's first position per
  namespace is checked against the table's control item; a refused batch writes nothing and every
  record of it is reported failed (Lambda delivers it again). `build_projector` wires it for every
  projector that resolves its table through the active-table pointer (all deployed and local ones).
- a top-level `"eventstackNamespace"` key in the event puts every record in that namespace instead of
  its shard's: `eventstack dlq redrive` delivers a dead-lettered range in a namespace of its own
  (`redrive:<stream>:<shard>:<start>`), since later batches have moved the shard's watermarks past it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any

from escore.control import GATE_CACHE_SECONDS, GATE_WAIT_SECONDS, Gate
from escore.engine import Delivery, Projector, position_of
from escore.envelope import EnvelopeError, decode
from escore.projection import ProjectionSpec
from escore.runtime import ConfigError, Handler, aws_client, lazy

NAMESPACE_KEY = "eventstackNamespace"  # an event's namespace override (a DLQ redrive's own)


def shard_namespace(record: Mapping[str, Any]) -> str:
    """`<stream name>:<shard number>` of a Kinesis record in a Lambda event (the replay tail uses it too)."""
    stream = str(record.get("eventSourceARN", "")).rpartition("/")[2] or "kinesis"
    shard = str(record.get("eventID", "")).partition(":")[0]
    return namespace(stream, shard)


def namespace(stream_name: str, shard_id: str) -> str:
    number = shard_id.rpartition("-")[2]
    return f"{stream_name}:{int(number) if number.isdigit() else number}"


def kinesis_handler(projector: Projector, logger: Any = None, *, gate: Gate | None = None) -> Handler:
    """The handler of a Kinesis mapping over `projector`; with `gate`, each batch is checked first
    (give the projector `gate.table` as its table, so that both use the table the gate checked)."""
    from escore.observability import count
    from escore.observability import logger as default_logger

    log = logger or default_logger

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = event.get("Records") or []
        override = event.get(NAMESPACE_KEY)
        if override is not None and (not isinstance(override, str) or not override):
            raise ValueError(f"{NAMESPACE_KEY} must be a non-empty string")
        if gate is not None and records:
            firsts: dict[str, str] = {}
            for record in records:
                space = override or shard_namespace(record)
                position = position_of(record["kinesis"]["sequenceNumber"])
                if space not in firsts or position < firsts[space]:
                    firsts[space] = position
            refusal = gate.admit(firsts)
            if refusal is not None:  # nothing written; the whole batch comes back
                log.info("projection %s: batch of %d records refused: %s", projector.spec.name, len(records), refusal)
                count("BatchesRefused", 1)
                count("RecordsFailed", len(records))
                sequences = sorted((str(r["kinesis"]["sequenceNumber"]) for r in records), key=_seq_key)
                return {"batchItemFailures": [{"itemIdentifier": s} for s in sequences]}
        deliveries: list[Delivery] = []
        records_of: dict[str, list[str]] = {}
        failed: set[str] = set()
        undecodable: dict[str, str] = {}  # namespace -> lowest position of an undecodable record
        for record in records:
            sequence = record["kinesis"]["sequenceNumber"]
            space, position = override or shard_namespace(record), position_of(sequence)
            try:
                envelope = decode(base64.b64decode(record["kinesis"]["data"], validate=True))
            except (EnvelopeError, binascii.Error, ValueError, KeyError, TypeError) as exc:
                log.warning("undecodable record %s: %s", sequence, exc)
                failed.add(sequence)
                if space not in undecodable or position < undecodable[space]:
                    undecodable[space] = position
                continue
            deliveries.append(Delivery(envelope, space, position))
            records_of.setdefault(envelope.event_id, []).append(sequence)
        # Nothing after an undecodable record of its shard may be written (it may touch the same items).
        kept: list[Delivery] = []
        for delivery in deliveries:
            if delivery.namespace not in undecodable or delivery.position < undecodable[delivery.namespace]:
                kept.append(delivery)
            else:
                failed.update(records_of.get(delivery.event.event_id, ()))
        result = projector.apply(kept)
        for failure in result.failed:
            failed.update(records_of.get(failure.event_id, ()))
        if result.failed:  # one line, not one per event: a failed item fails up to a batch of them
            shown = "; ".join(f"{f.stream_id} v{f.version} ({f.event_id}): {f.reason}" for f in result.failed[:5])
            more = f"; and {len(result.failed) - 5} more" if len(result.failed) > 5 else ""
            log.warning("%d events failed: %s%s", len(result.failed), shown, more)
        log.info("projection %s: %d records, %d applied, %d skipped, %d duplicates, %d records failed",
                 projector.spec.name, len(records), result.applied, result.skipped,
                 result.duplicates, len(failed))
        count("EventsApplied", result.applied)
        count("DuplicatesSkipped", result.duplicates)
        count("RecordsFailed", len(failed))
        poison = [f for f in result.failed if f.poison]
        if undecodable or poison:
            # A record no retry can apply. Reporting it would send it back with everything behind it
            # in its shard (which the engine does not write past it) until the retries run out and
            # the whole tail is dead-lettered. A function error instead makes Lambda bisect the
            # batch (the mapping's BisectBatchOnFunctionError) until the poison is alone: only it
            # reaches the dead-letter queue, and the records around it go through.
            what = [f"{len(undecodable)} undecodable record(s)"] if undecodable else []
            what += [f"{f.stream_id} v{f.version}: {f.reason}" for f in poison[:3]]
            raise PoisonedBatch(f"projection {projector.spec.name}: {'; '.join(what)}")
        return {"batchItemFailures": [{"itemIdentifier": s} for s in sorted(failed, key=_seq_key)]}

    return handle


class PoisonedBatch(RuntimeError):
    """The batch holds a record that can never be applied: fail the invocation, so Lambda bisects."""


def _seq_key(sequence: str) -> tuple[int, str]:
    return (int(sequence), "") if sequence.isdigit() else (0, sequence)


def build_projector(
    spec: ProjectionSpec,
    env: Mapping[str, str],
    client: Any = None,
    *,
    ssm_client: Any = None,
    gate: bool | None = None,
    gate_cache_seconds: float = GATE_CACHE_SECONDS,
    gate_wait_seconds: float = GATE_WAIT_SECONDS,
) -> Handler:
    """A projection's Lambda handler: its table from `<NAME>_TABLE`, or the pointer replay switches.

    `gate` (default: when the table is resolved through the pointer, `<NAME>_TABLE_PARAMETER`, as
    every deployed and local projector is): check replay's control item before each batch.
    """
    from escore.naming import table_parameter_env
    from escore.observability import logger
    from escore.tables import TableResolver

    dynamodb = aws_client("dynamodb", client)
    resolver = TableResolver(env, spec.name, ssm_client=ssm_client)
    if gate is None:
        gate = bool(env.get(table_parameter_env(spec.name)))
    if not gate:
        return kinesis_handler(_projector(spec, env, resolver, dynamodb), logger)
    checked = Gate(dynamodb, resolver, cache_seconds=gate_cache_seconds, wait_seconds=gate_wait_seconds)
    return kinesis_handler(_projector(spec, env, checked.table, dynamodb), logger, gate=checked)


def _projector(spec: ProjectionSpec, env: Mapping[str, str], table: Callable[[], str], dynamodb: Any) -> Projector:
    """The engine on `table`, with the projection's effects (if any) built on the table it writes."""
    made: list[Projector] = []
    effects = spec.effects(env, lambda: made[0].table_name, dynamodb) if spec.effects is not None else None
    made.append(Projector(spec, table, dynamodb, effects=effects))
    return made[0]


def load_projection(module_name: str) -> ProjectionSpec:
    """`PROJECTION` of a folds module (the topology's `Projection.folds`)."""
    import importlib

    spec = getattr(importlib.import_module(module_name), "PROJECTION", None)
    if not isinstance(spec, ProjectionSpec):
        raise ConfigError(f"{module_name} has no PROJECTION = ProjectionSpec(...)")
    return spec


def build(env: Mapping[str, str], *, client: Any = None, **options: Any) -> Handler:
    """Every projector's handler: the folds of the module its settings name, on its table."""
    from escore.settings import ProjectorSettings

    settings = ProjectorSettings.from_env(env)
    return build_projector(load_projection(settings.projection_module), env, client, **options)


handler = lazy(build)
