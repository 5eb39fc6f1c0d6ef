"""The projection engine: applies events to a DynamoDB read model exactly once in effect.

Delivery is at least once (Kinesis retries, duplicated batches, replays), so the engine keeps,
in the projection table itself, one checkpoint item per source stream (aggregate):
`pk = "$stream#<stream_id>"`, `sk = "$checkpoint"`, holding `v` (the last applied version) and
`s` (the small per-stream state the projection folds, e.g. a post's author). For each event:

- version <= v: a duplicate, skipped;
- version == v + 1: applied;
- version > v + 1: ahead of a missing predecessor: failed (retried later), never applied.

A batch's events are grouped by stream and sorted by version first, so a stream's events that
arrive out of order inside one batch are applied in order. The read-model writes and the
checkpoint moves are committed together in one TransactWriteItems (<= 100 items), each checkpoint
conditioned on the version read, so a duplicate or concurrent delivery can never apply twice.

A projection (`ProjectionSpec`) is a pure per-stream fold: `(stream state, event) -> (new state,
writes)`. Writes to a key shared by several streams (a user's `post_count`, fed by every post)
must commute (ADD, or SET of attributes only one stream writes): that makes the result the same
whatever the order of events of different streams. Within a transaction the writes are coalesced
per key (`Write.then`): three PostCreated of one author become one `ADD post_count :3`.

`Projector.apply(events)` is the whole engine, with no Kinesis in it: the Kinesis handler
(`kinesis_handler`) and the replay tool both call it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from escore.envelope import Envelope, EnvelopeError, decode
from escore.runtime import Handler, aws_client
from escore.upcasting import SchemaTooNew, UpcasterRegistry, upcasters

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (pk, sk)
StreamState = dict[str, Any]
Op = Literal["update", "put", "delete"]

CHECKPOINT_PREFIX = "$stream#"
CHECKPOINT_SK = "$checkpoint"
MAX_TRANSACT_ITEMS = 100
MAX_TRANSACT_BYTES = 3 * 1024 * 1024  # of DynamoDB's 4 MB, with room for our estimate's slack
MAX_BATCH_GET_KEYS = 100

# Cancellation reasons that a fresh read and a new attempt can resolve.
_RETRYABLE_REASONS = {"ConditionalCheckFailed", "TransactionConflict", "ThrottlingError",
                      "ProvisionedThroughputExceeded", "RequestLimitExceeded"}
_RETRYABLE_CODES = {"TransactionConflictException", "TransactionInProgressException",
                    "ThrottlingException", "ProvisionedThroughputExceededException",
                    "RequestLimitExceeded"}


# --- writes -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Write:
    """One change to one read-model item. `put` replaces the item with `key` + `set`."""

    key: Key
    op: Op
    set: Mapping[str, Any] = field(default_factory=dict)
    add: Mapping[str, int] = field(default_factory=dict)
    remove: frozenset[str] = frozenset()

    def then(self, later: Write) -> Write:
        """The single write with the effect of `self` followed by `later` (same key)."""
        if later.key != self.key:
            raise ValueError("only writes to one key coalesce")
        if later.op != "update":
            return later
        if self.op != "update":
            base = {} if self.op == "delete" else dict(self.set)
            return Write(self.key, "put", apply_update(base, later))
        sets, adds, removes = dict(self.set), dict(self.add), set(self.remove)
        for name, value in later.set.items():
            sets[name] = value
            adds.pop(name, None)
            removes.discard(name)
        for name, amount in later.add.items():
            if name in sets:
                sets[name] = sets[name] + amount
            elif name in removes:
                removes.discard(name)
                sets[name] = amount
            else:
                adds[name] = adds.get(name, 0) + amount
        for name in later.remove:
            sets.pop(name, None)
            adds.pop(name, None)
            removes.add(name)
        return Write(self.key, "update", sets, adds, frozenset(removes))


def update(key: Key, *, set: Mapping[str, Any] | None = None, add: Mapping[str, int] | None = None,
           remove: Iterable[str] = ()) -> Write:
    return Write(key, "update", dict(set or {}), dict(add or {}), frozenset(remove))


def put(key: Key, item: Mapping[str, Any]) -> Write:
    return Write(key, "put", dict(item))


def delete(key: Key) -> Write:
    return Write(key, "delete")


def apply_update(attributes: Mapping[str, Any], write: Write) -> dict[str, Any]:
    """An item's attributes (without its key) after an `update` write, as DynamoDB computes them."""
    out = dict(attributes)
    out.update(write.set)
    for name, amount in write.add.items():
        out[name] = out.get(name, 0) + amount
    for name in write.remove:
        out.pop(name, None)
    return out


def apply_write(item: Mapping[str, Any] | None, write: Write) -> dict[str, Any] | None:
    """An item (attributes without key) after a write; None means no item. Pure: for tests and tools."""
    if write.op == "delete":
        return None
    if write.op == "put":
        return dict(write.set)
    return apply_update(item or {}, write)


# --- projections --------------------------------------------------------------------------

Fold = Callable[[StreamState, Envelope], tuple[StreamState, list[Write]]]


@dataclass(frozen=True)
class ProjectionSpec:
    """A read model: per event type, a pure fold of the event's stream state into writes.

    Types not in `folds` are skipped (CONTRACT §3: readers skip types they do not know); their
    stream's checkpoint still moves past them.
    """

    name: str
    folds: Mapping[str, Fold]


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    event_id: str
    stream_id: str
    version: int
    reason: str


@dataclass
class ApplyResult:
    applied: int = 0  # events whose effect was committed by this call
    skipped: int = 0  # events of types the projection does not know (checkpoint moved past them)
    duplicates: int = 0  # events already applied (or delivered twice in this call)
    failed: list[Failure] = field(default_factory=list)

    @property
    def failed_event_ids(self) -> set[str]:
        return {failure.event_id for failure in self.failed}


# --- DynamoDB attribute values (a few types; no boto3 import at cold start) ----------------


def to_attr(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if value is None:
        return {"NULL": True}
    if isinstance(value, Mapping):
        return {"M": {str(k): to_attr(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [to_attr(v) for v in value]}
    raise TypeError(f"cannot store {type(value).__name__} in a projection (use str, int, bool, dict, list)")


def from_attr(attr: Mapping[str, Any]) -> Any:
    (kind, value), = attr.items()
    if kind == "S":
        return value
    if kind == "N":
        return int(value) if value.lstrip("-").isdigit() else float(value)
    if kind == "BOOL":
        return bool(value)
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: from_attr(v) for k, v in value.items()}
    if kind == "L":
        return [from_attr(v) for v in value]
    raise TypeError(f"unexpected attribute type {kind}")


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: from_attr(attr) for name, attr in item.items()}


def checkpoint_key(stream_id: str) -> Key:
    return (CHECKPOINT_PREFIX + stream_id, CHECKPOINT_SK)


# --- the engine ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Step:
    event: Envelope  # as delivered (before upcasting): its id is what the caller reports
    writes: list[Write]
    state: StreamState  # the stream's state after this event
    skipped: bool


@dataclass(slots=True)
class _Segment:
    stream_id: str
    from_version: int  # the checkpoint this segment's transaction is conditioned on
    steps: list[_Step]


@dataclass(slots=True)
class _StreamPlan:
    version: int  # committed checkpoint
    state: StreamState
    steps: deque[_Step]


class _Retry(Exception):
    pass


class Projector:
    """Applies events to one projection table. Thread-compatible, not thread-safe."""

    def __init__(
        self,
        spec: ProjectionSpec,
        table: str | Callable[[], str],
        client: Any,
        *,
        upcaster: UpcasterRegistry = upcasters,
        max_attempts: int = 3,
        max_transact_items: int = MAX_TRANSACT_ITEMS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 2 <= max_transact_items <= MAX_TRANSACT_ITEMS:
            raise ValueError(f"max_transact_items must be 2..{MAX_TRANSACT_ITEMS}")
        self.spec = spec
        # A callable resolves the active table (escore.tables.TableResolver) once per `apply`.
        self._table = table
        self.table_name = table if isinstance(table, str) else table()
        self._client = client
        self._upcaster = upcaster
        self._max_attempts = max_attempts
        self._max_items = max_transact_items
        self._sleep = sleep

    # public ---------------------------------------------------------------------------------

    def apply(self, events: Sequence[Envelope]) -> ApplyResult:
        """Apply a batch of events (any order, duplicates allowed); report what was done.

        The batch is taken whole: a stream's events are sorted by version before applying, so
        out-of-order events inside one call are fine; an event whose predecessor is neither
        applied nor in the call fails. Nothing raises for a bad event: it is in `failed`.
        """
        result = ApplyResult()
        if not isinstance(self._table, str):
            self.table_name = self._table()
        pending: dict[str, list[Envelope]] = {}
        by_stream: dict[str, dict[int, Envelope]] = {}
        for event in events:
            seen = by_stream.setdefault(event.stream_id, {})
            first = seen.get(event.version)
            if first is None:
                seen[event.version] = event
            elif first.event_id == event.event_id:
                result.duplicates += 1
            else:
                result.failed.append(Failure(event.event_id, event.stream_id, event.version,
                                             f"conflicts with event {first.event_id} at the same version"))
        for stream_id, versions in by_stream.items():
            pending[stream_id] = [versions[v] for v in sorted(versions)]

        for attempt in range(1, self._max_attempts + 1):
            retry = self._attempt(pending, result)
            if not retry:
                break
            if attempt == self._max_attempts:
                for events_left, reason in retry.values():
                    self._fail(result, events_left, f"gave up after {attempt} attempts: {reason}")
                break
            self._sleep(min(0.05 * 2**attempt, 1.0) * (0.5 + random.random()))
            pending = {stream_id: events_left for stream_id, (events_left, _) in retry.items()}
        return result

    def checkpoint(self, stream_id: str) -> int:
        """The last applied version of a source stream (0 if none)."""
        found = self._read_checkpoints([stream_id])
        return found[stream_id][0] if stream_id in found else 0

    # one attempt --------------------------------------------------------------------------------

    def _attempt(
        self, pending: Mapping[str, list[Envelope]], result: ApplyResult
    ) -> dict[str, tuple[list[Envelope], str]]:
        try:
            checkpoints = self._read_checkpoints(list(pending))
        except Exception as exc:
            log.exception("reading checkpoints of %s failed", self.table_name)
            for events in pending.values():
                self._fail(result, events, f"reading checkpoints failed: {exc}")
            return {}

        plans: dict[str, _StreamPlan] = {}
        for stream_id, events in pending.items():
            version, state = checkpoints.get(stream_id, (0, {}))
            steps = self._fold_stream(version, state, events, result)
            if steps:
                plans[stream_id] = _StreamPlan(version, state, deque(steps))

        retry: dict[str, tuple[list[Envelope], str]] = {}
        # Packing consumes streams front to back, so the exhausted ones are always a prefix.
        order = deque(sorted(plans, key=lambda sid: _affinity(plans[sid])))
        while True:
            while order and not plans[order[0]].steps:
                order.popleft()
            if not order:
                return retry
            group = self._pack(order, plans, result)
            if not group:
                continue
            try:
                self._commit(group)
            except _Retry as exc:
                for stream_id, left in self._unwind(group, plans).items():
                    retry[stream_id] = (left, str(exc))
                continue
            except Exception as exc:
                log.warning("projection %s: a transaction failed: %r", self.spec.name, exc)
                for left in self._unwind(group, plans).values():
                    self._fail(result, left, f"write failed: {exc}")
                continue
            for segment in group:
                plan = plans[segment.stream_id]
                plan.version = segment.steps[-1].event.version
                plan.state = segment.steps[-1].state
                for step in segment.steps:
                    if step.skipped:
                        result.skipped += 1
                    else:
                        result.applied += 1

    @staticmethod
    def _unwind(group: list[_Segment], plans: dict[str, _StreamPlan]) -> dict[str, list[Envelope]]:
        """The events a failed transaction leaves unapplied, stream by stream (and what followed them)."""
        left: dict[str, list[Envelope]] = {}
        for segment in group:
            plan = plans[segment.stream_id]
            left[segment.stream_id] = [s.event for s in segment.steps] + [s.event for s in plan.steps]
            plan.steps.clear()
        return left

    def _fold_stream(
        self, version: int, state: StreamState, events: list[Envelope], result: ApplyResult
    ) -> list[_Step]:
        steps: list[_Step] = []
        for index, event in enumerate(events):
            if event.version <= version:
                result.duplicates += 1
                continue
            if event.version != version + 1:
                self._fail(result, events[index:],
                           f"ahead of a missing predecessor: stream {event.stream_id} is at version "
                           f"{version}, event at {event.version}")
                break
            try:
                current = self._upcaster.upcast(event)
                fold = self.spec.folds.get(current.type)
                if fold is None:
                    steps.append(_Step(event, [], state, skipped=True))
                else:
                    state, writes = fold(dict(state), current)
                    for write in writes:
                        if write.key[0].startswith("$"):
                            raise ValueError(f"projection key {write.key} is reserved for checkpoints")
                    steps.append(_Step(event, writes, state, skipped=False))
            except SchemaTooNew as exc:
                self._fail(result, events[index:], f"schema too new: {exc}")
                break
            except Exception as exc:
                self._fail(result, events[index:], f"projection {self.spec.name} cannot apply it: {exc!r}")
                break
            version = event.version
        return steps

    def _pack(self, order: Iterable[str], plans: dict[str, _StreamPlan], result: ApplyResult) -> list[_Segment]:
        """Take steps, stream by stream, while the transaction stays within its limits."""
        segments: list[_Segment] = []
        keys: set[Key] = set()
        size = 0
        for stream_id in order:
            plan = plans[stream_id]
            segment: _Segment | None = None
            while plan.steps:
                step = plan.steps[0]
                new_keys = {w.key for w in step.writes} - keys
                step_size = sum(_estimate(w) for w in step.writes) + 512
                items = len(segments) + 1 + len(keys) + len(new_keys)  # checkpoints (this one too) + writes
                if items > self._max_items or size + step_size > MAX_TRANSACT_BYTES:
                    if segments or segment is not None:
                        if segment is not None:
                            segments.append(segment)
                        return segments
                    # One event alone is too large for a transaction: it can never be applied.
                    self._fail(result, [s.event for s in plan.steps],
                               "one event's writes exceed one transaction")
                    plan.steps.clear()
                    break
                plan.steps.popleft()
                if segment is None:
                    segment = _Segment(stream_id, plan.version, [])
                segment.steps.append(step)
                keys |= new_keys
                size += step_size
            if segment is not None:
                segments.append(segment)
        return segments

    def _commit(self, group: list[_Segment]) -> None:
        merged: dict[Key, Write] = {}
        items: list[dict[str, Any]] = []
        for segment in group:
            last = segment.steps[-1]
            items.append(self._checkpoint_item(segment.stream_id, segment.from_version,
                                               last.event.version, last.state))
            for step in segment.steps:
                for write in step.writes:
                    earlier = merged.get(write.key)
                    merged[write.key] = write if earlier is None else earlier.then(write)
        items.extend(item for write in merged.values() if (item := self._write_item(write)) is not None)
        try:
            self._client.transact_write_items(TransactItems=items)
        except Exception as exc:
            response = getattr(exc, "response", None)
            if not isinstance(response, dict):
                raise
            code = response.get("Error", {}).get("Code", "")
            if code == "TransactionCanceledException":
                reasons = {r.get("Code") for r in response.get("CancellationReasons", [])} - {"None", None}
                if reasons and reasons <= _RETRYABLE_REASONS:
                    raise _Retry(f"transaction cancelled: {', '.join(sorted(reasons))}") from exc
            elif code in _RETRYABLE_CODES:
                raise _Retry(code) from exc
            raise

    # DynamoDB requests ----------------------------------------------------------------------

    def _read_checkpoints(self, stream_ids: list[str]) -> dict[str, tuple[int, StreamState]]:
        found: dict[str, tuple[int, StreamState]] = {}
        for start in range(0, len(stream_ids), MAX_BATCH_GET_KEYS):
            keys = [
                {"pk": {"S": pk}, "sk": {"S": sk}}
                for pk, sk in (checkpoint_key(sid) for sid in stream_ids[start:start + MAX_BATCH_GET_KEYS])
            ]
            request: dict[str, Any] = {self.table_name: {
                "Keys": keys, "ConsistentRead": True, "ProjectionExpression": "pk, v, s"}}
            for round_ in range(8):
                response = self._client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    stream_id = item["pk"]["S"][len(CHECKPOINT_PREFIX):]
                    state = from_attr(item["s"]) if "s" in item else {}
                    found[stream_id] = (int(item["v"]["N"]), state)
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                self._sleep(min(0.05 * 2**round_, 1.0) * random.random())
            else:
                raise RuntimeError("BatchGetItem kept returning unprocessed keys")
        return found

    def _checkpoint_item(self, stream_id: str, expected: int, version: int, state: StreamState) -> dict[str, Any]:
        pk, sk = checkpoint_key(stream_id)
        values: dict[str, Any] = {":v": {"N": str(version)}}
        if state:
            expression = "SET #v = :v, #s = :s"
            values[":s"] = to_attr(state)
        else:
            expression = "SET #v = :v REMOVE #s"
        if expected == 0:
            condition = "attribute_not_exists(#v)"
        else:
            condition = "#v = :expected"
            values[":expected"] = {"N": str(expected)}
        return {"Update": {
            "TableName": self.table_name,
            "Key": {"pk": {"S": pk}, "sk": {"S": sk}},
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#v": "v", "#s": "s"},
            "ExpressionAttributeValues": values,
        }}

    def _write_item(self, write: Write) -> dict[str, Any] | None:
        key = {"pk": {"S": write.key[0]}, "sk": {"S": write.key[1]}}
        if write.op == "delete":
            return {"Delete": {"TableName": self.table_name, "Key": key}}
        if write.op == "put":
            item = dict(key)
            item.update((name, to_attr(value)) for name, value in write.set.items())
            return {"Put": {"TableName": self.table_name, "Item": item}}
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        clauses: list[str] = []
        for verb, entries in (("SET", write.set), ("ADD", write.add)):
            parts = []
            for name, value in entries.items():
                n, v = f"#a{len(names)}", f":a{len(values)}"
                names[n], values[v] = name, to_attr(value)
                parts.append(f"{n} = {v}" if verb == "SET" else f"{n} {v}")
            if parts:
                clauses.append(f"{verb} {', '.join(parts)}")
        if write.remove:
            parts = []
            for name in sorted(write.remove):
                n = f"#a{len(names)}"
                names[n] = name
                parts.append(n)
            clauses.append(f"REMOVE {', '.join(parts)}")
        if not clauses:
            return None
        body: dict[str, Any] = {"TableName": self.table_name, "Key": key,
                                "UpdateExpression": " ".join(clauses), "ExpressionAttributeNames": names}
        if values:
            body["ExpressionAttributeValues"] = values
        return {"Update": body}

    @staticmethod
    def _fail(result: ApplyResult, events: Iterable[Envelope], reason: str) -> None:
        for index, event in enumerate(events):
            why = reason if index == 0 else f"behind a failed predecessor ({reason})"
            result.failed.append(Failure(event.event_id, event.stream_id, event.version, why))


def _affinity(plan: _StreamPlan) -> tuple[str, ...]:
    """Streams that write the same keys sort together, so their writes share a transaction."""
    keys = sorted({w.key[0] for step in plan.steps for w in step.writes})
    return tuple(keys) if keys else ("\uffff",)


def _estimate(write: Write) -> int:
    return 64 + len(write.key[0]) + len(write.key[1]) + len(orjson.dumps(dict(write.set), default=str))


# --- the Kinesis adapter ------------------------------------------------------------------


def kinesis_handler(projector: Projector, logger: Any = log) -> Handler:
    """A Lambda handler for a Kinesis event source mapping with ReportBatchItemFailures.

    The whole batch goes through `projector.apply` at once (sorting per stream, coalescing,
    one transaction for many records), so the response is built here rather than by Powertools'
    per-record BatchProcessor: every record of a failed event, and every undecodable record,
    is reported by its sequence number; Lambda re-delivers from the lowest.
    """
    from escore.observability import count

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = event.get("Records") or []
        envelopes: list[Envelope] = []
        records_of: dict[str, list[str]] = {}
        failed: set[str] = set()
        for record in records:
            sequence = record["kinesis"]["sequenceNumber"]
            try:
                envelope = decode(base64.b64decode(record["kinesis"]["data"], validate=True))
            except (EnvelopeError, binascii.Error, ValueError, KeyError, TypeError) as exc:
                logger.warning("undecodable record %s: %s", sequence, exc)
                failed.add(sequence)
                continue
            envelopes.append(envelope)
            records_of.setdefault(envelope.event_id, []).append(sequence)
        result = projector.apply(envelopes)
        for failure in result.failed:
            failed.update(records_of.get(failure.event_id, ()))
        if result.failed:  # one line, not one per event: a failed transaction fails up to 100 of them
            shown = "; ".join(f"{f.stream_id} v{f.version} ({f.event_id}): {f.reason}" for f in result.failed[:5])
            more = f"; and {len(result.failed) - 5} more" if len(result.failed) > 5 else ""
            logger.warning("%d events failed: %s%s", len(result.failed), shown, more)
        logger.info("projection %s: %d records, %d applied, %d skipped, %d duplicates, %d records failed",
                    projector.spec.name, len(records), result.applied, result.skipped,
                    result.duplicates, len(failed))
        count("EventsApplied", result.applied)
        count("DuplicatesSkipped", result.duplicates)
        count("RecordsFailed", len(failed))
        return {"batchItemFailures": [{"itemIdentifier": s} for s in sorted(failed, key=_seq_key)]}

    return handle


def _seq_key(sequence: str) -> tuple[int, str]:
    return (int(sequence), "") if sequence.isdigit() else (0, sequence)


def build_projector(spec: ProjectionSpec, env: Mapping[str, str], client: Any = None) -> Handler:
    """A projection's Lambda handler: its table from `<NAME>_TABLE`, or the pointer replay switches."""
    from escore.observability import logger
    from escore.tables import TableResolver

    return kinesis_handler(Projector(spec, TableResolver(env, spec.name), aws_client("dynamodb", client)), logger)


class InMemoryProjection:
    """A projection folded in memory: the same folds as `Projector`, no DynamoDB, no checkpoints.

    For tests (the expected result of a run) and benchmarks. The caller feeds each stream's events
    once and in version order; `items` is the table, keyed by (pk, sk).
    """

    def __init__(self, spec: ProjectionSpec) -> None:
        self.spec = spec
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.states: dict[str, StreamState] = {}

    def apply(self, events: Iterable[Envelope]) -> InMemoryProjection:
        folds, items, states = self.spec.folds, self.items, self.states
        for event in events:
            fold = folds.get(event.type)
            if fold is None:
                continue
            states[event.stream_id], writes = fold(states.get(event.stream_id, {}), event)
            for write in writes:
                item = apply_write(items.get(write.key), write)
                if item is None:
                    items.pop(write.key, None)
                else:
                    items[write.key] = item
        return self


def read_count(client: Any, table: str, key: tuple[str, str], attribute: str) -> int:
    """A counter a projection keeps with ADD (e.g. `post_count`): 0 when the item or attribute is absent."""
    response = client.get_item(
        TableName=table,
        Key={"pk": {"S": key[0]}, "sk": {"S": key[1]}},
        ProjectionExpression=attribute,
    )
    item = response.get("Item")
    if not item or attribute not in item:
        return 0
    return max(int(item[attribute]["N"]), 0)
