"""After a run of the local runtime: where did every event of the event stores end up?

For every consumer of a service's events the store's unique events must split exactly into the ones
the consumer applied and the ones in its dead-letter queue, with none lost and none applied twice:
- a relay (`<service>-publisher`, the store's change stream to Kinesis): applied = store events on
  the service's Kinesis stream; each must be there once (the relay promises it; a second copy at a
  new sequence number counts double-applied). Its DLQ's ranges of the change stream are read back.
- a projection mapping (`<projection>-from-<service>`): the projection table is compared with the
  in-memory fold (`InMemoryProjection`, the engine's folds) of every source's store events minus
  those in each mapping's DLQ (ranges read back from Kinesis through `eventstack.dlq`). Equal: the
  mapping applied store - DLQ, nothing lost, nothing twice. Any difference is counted in units of
  effect (a counter off by n is n; a missing, extra or different item field is 1), lost when the
  table holds less than the fold, double-applied when more, and charged to the source whose events
  set that field.
- an archive (`archive:<service>`): applied = store events in objects under `events/service=<s>/`
  (copies beyond the first are at-least-once delivery, counted apart, and must be identical);
  its "DLQ" is the error prefix: store events whose records Firehose wrote under `errors/`.
Records in a DLQ or under `errors/` that are not store events (poison put on a stream by hand) are
counted as `other`.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import importlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from numbers import Number
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from escore.envelope import Envelope, EnvelopeError, decode
from escore.projection import InMemoryProjection, ProjectionSpec
from escore.upcasting import SchemaTooNew
from eventstack.dlq import DeadLetters
from eventstack.resources import from_local_status
from eventstack.topology import TOPOLOGY
from tests.e2e.local_stack import LocalStack
from tests.integration.projector_harness import live, scan
from tests.support.projectors import upcasters

Key = tuple[str, str]


@dataclass
class Account:
    consumer: str  # a mapping's name, or archive:<service>
    kind: str  # relay | projection | archive
    source: str  # the service whose event store it consumes
    store: int = 0  # unique events in that store
    applied: int = 0
    dlq: int = 0  # store events in its DLQ (archive: written under errors/)
    other: int = 0  # records in its DLQ or errors/ that are not store events
    lost: int = 0
    double_applied: int = 0
    copies: int = 0  # archive: extra identical copies (at least once); relay: unused
    problems: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        """store = applied + DLQ, nothing lost or applied twice, and nothing else wrong (a relay: every
        stream's events on Kinesis in version order)."""
        return (self.store == self.applied + self.dlq and not self.lost and not self.double_applied
                and not self.problems)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "balanced": self.balanced}


@dataclass
class Observed:
    """What a run left behind, read straight from the emulation."""

    status: dict[str, Any]
    stores: dict[str, list[Envelope]]  # service -> its events (unique by event_id)
    undecodable: dict[str, int]  # service -> event items of its store that hold no envelope
    dead: dict[str, list[dict[str, Any]]]  # mapping -> the records its DLQ messages reference
    dlq_messages: dict[str, int]


def read_stream(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    """Every record of a Kinesis stream, every shard, oldest first."""
    records: list[dict[str, Any]] = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            records += page["Records"]
            if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                break
            iterator = page.get("NextShardIterator")
    return records


def store_events(stack: LocalStack, table: str) -> tuple[list[Envelope], int]:
    """The envelopes of a store's event items, and how many event items hold none (a poison item:
    `DynamoDBEventStore.iter_all` would stop at it)."""
    events, bad = [], 0
    for page in stack.client("dynamodb").get_paginator("scan").paginate(
            TableName=table, ConsistentRead=True, FilterExpression="#kind = :event",
            ExpressionAttributeNames={"#kind": "kind"}, ExpressionAttributeValues={":event": {"S": "event"}}):
        for item in page["Items"]:
            envelope = _decoded(item.get("envelope", {}).get("S", ""))
            if envelope is None:
                bad += 1
            else:
                events.append(envelope)
    return events, bad


def observe(stack: LocalStack) -> Observed:
    status = stack.status()
    stores: dict[str, list[Envelope]] = {}
    undecodable: dict[str, int] = {}
    for service in TOPOLOGY.services:
        events, bad = store_events(stack, status["tables"][service.event_store.logical_name])
        stores[service.name], undecodable[service.name] = list({e.event_id: e for e in events}.values()), bad
    letters = DeadLetters(from_local_status(status), stack.client)
    dead: dict[str, list[dict[str, Any]]] = {}
    counts: dict[str, int] = {}
    for report in letters.list(peek=100):
        dead[report.mapping] = [r for failure in report.failures for r in letters.read_range(failure)]
        counts[report.mapping] = len(report.failures)
        held = report.visible + report.in_flight
        assert held == len(report.failures), f"{report.mapping}: {held} DLQ messages, {len(report.failures)} read"
    return Observed(status, stores, undecodable, dead, counts)


def _decoded(raw: bytes | str) -> Envelope | None:
    try:
        return decode(raw)
    except (EnvelopeError, ValueError, TypeError):
        return None


def _envelope_of(record: Mapping[str, Any]) -> Envelope | None:
    """The envelope a Lambda-shaped stream record carries (Kinesis data, or a store item's image)."""
    try:
        if "kinesis" in record:
            return _decoded(base64.b64decode(record["kinesis"]["data"]))
        return _decoded(record["dynamodb"]["NewImage"]["envelope"]["S"])
    except (KeyError, TypeError, binascii.Error):
        return None


def _is_event(record: Mapping[str, Any]) -> bool:
    """A Kinesis record, or a change record of an event item (not a claim, an idempotency record...)."""
    if "kinesis" in record:
        return True
    image = record.get("dynamodb", {}).get("NewImage", {})
    return bool(record.get("eventName") == "INSERT" and image.get("kind", {}).get("S") == "event")


def dead_events(observed: Observed, mapping: str, store_ids: set[str]) -> tuple[set[str], int]:
    """(store event ids a mapping's DLQ references, how many of its records are not store events)."""
    ids: set[str] = set()
    other = 0
    for record in observed.dead.get(mapping, []):
        envelope = _envelope_of(record)
        if envelope is not None and envelope.event_id in store_ids:
            ids.add(envelope.event_id)
        elif _is_event(record):
            other += 1
    return ids, other


# -- relays ----------------------------------------------------------------------------------
def relay_accounts(stack: LocalStack, observed: Observed) -> list[Account]:
    out = []
    for service in TOPOLOGY.services:
        events = observed.stores[service.name]
        ids = {e.event_id for e in events}
        account = Account(service.publisher_function_name, "relay", service.name, store=len(ids))
        copies: Counter[str] = Counter()
        last: dict[str, int] = {}  # stream_id -> the version last seen on its shard
        for record in read_stream(stack.client("kinesis"), observed.status["streams"][service.name]):
            envelope = _decoded(record["Data"])
            if envelope is not None and envelope.event_id in ids:
                copies[envelope.event_id] += 1
                if envelope.version <= last.get(envelope.stream_id, 0):
                    account.problems.append(f"{envelope.stream_id} v{envelope.version} on Kinesis after "
                                            f"v{last[envelope.stream_id]}")
                last[envelope.stream_id] = max(envelope.version, last.get(envelope.stream_id, 0))
        dead, account.other = dead_events(observed, service.publisher_function_name, ids)
        account.applied = len(copies)
        account.double_applied = sum(n - 1 for n in copies.values())
        account.dlq = len(dead - copies.keys())
        account.lost = len(ids - copies.keys() - dead)
        out.append(account)
    return out


# -- projections -----------------------------------------------------------------------------
def spec_of(folds: str) -> ProjectionSpec:
    spec: ProjectionSpec = importlib.import_module(folds).PROJECTION
    return spec


def fold(spec: ProjectionSpec, events: Iterable[Envelope]) -> tuple[dict[Key, dict[str, Any]], list[Envelope]]:
    """The table the projection's folds make of `events` (each stream in version order), and the
    events no fold can take (schema too new: a live projector dead-letters those)."""
    projection = InMemoryProjection(spec)
    refused = []
    for event in sorted(events, key=lambda e: (e.stream_id, e.version)):
        try:
            projection.apply([upcasters.upcast(event)])
        except SchemaTooNew:
            refused.append(event)
    return {key: _plain(item) for key, item in projection.items.items()}, refused


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in item.items() if name not in ("pk", "sk")}


def table_items(stack: LocalStack, table: str) -> dict[Key, dict[str, Any]]:
    """The table's read-model items (`live`: no tombstones, no engine attributes) as plain values."""
    value = TypeDeserializer().deserialize
    return {key: _plain({name: value(attr) for name, attr in item.items()})
            for key, item in live(scan(stack.client("dynamodb"), table)).items()}


def differences(expected: Mapping[Key, Mapping[str, Any]], actual: Mapping[Key, Mapping[str, Any]],
                owner: Mapping[tuple[Key, str], str]) -> dict[str, tuple[int, int, list[str]]]:
    """Per source: (lost, double-applied, what differs) between the fold and the table."""
    found: dict[str, list[Any]] = defaultdict(lambda: [0, 0, []])
    for key in sorted(expected.keys() | actual.keys()):
        want, have = expected.get(key, {}), actual.get(key, {})
        for name in sorted(want.keys() | have.keys()):
            a, b = want.get(name), have.get(name)
            if a == b:
                continue
            entry = found[owner.get((key, name), "?")]
            if isinstance(a, Number) and isinstance(b, Number) and not isinstance(a, bool):
                gap = int(b) - int(a)  # type: ignore[call-overload]
                entry[0 if gap < 0 else 1] += abs(gap)
            else:
                entry[0 if b is None or a is not None else 1] += 1
            entry[2].append(f"{key[0]}/{key[1]}.{name}: fold {a!r}, table {b!r}")
    return {source: (lost, double, what) for source, (lost, double, what) in found.items()}


def projection_accounts(stack: LocalStack, observed: Observed) -> list[Account]:
    out = []
    for _owner, projection in TOPOLOGY.projections:
        spec = spec_of(projection.folds)
        kept: list[Envelope] = []
        owner: dict[tuple[Key, str], str] = {}
        accounts = {}
        for source in projection.sources:
            mapping = f"{projection.name}-from-{source}"
            events = observed.stores[source]
            ids = {e.event_id for e in events}
            dead, other = dead_events(observed, mapping, ids)
            accounts[source] = Account(mapping, "projection", source, store=len(ids), dlq=len(dead), other=other)
            alone, _ = fold(spec, events)
            for key, item in alone.items():
                for name in item:
                    owner.setdefault((key, name), source)
            kept += [e for e in events if e.event_id not in dead]
        expected, refused = fold(spec, kept)
        actual = table_items(stack, observed.status["tables"][projection.name])
        gaps = differences(expected, actual, owner)
        orphan_lost, orphan_double, orphans = gaps.get("?", (0, 0, []))  # fields no source's fold sets
        for source, account in accounts.items():
            lost, double, what = gaps.get(source, (0, 0, []))
            lost, double, what = lost + orphan_lost, double + orphan_double, what + orphans  # charged to each
            unapplied = sum(1 for e in refused if e.service == source)  # neither applied nor dead-lettered
            account.lost = lost + unapplied
            account.double_applied = double
            account.applied = max(account.store - account.dlq - unapplied - lost, 0)
            account.problems = what[:10] + [f"{e.stream_id} v{e.version}: schema too new, not in the DLQ"
                                            for e in refused if e.service == source][:10]
            out.append(account)
    return out


# -- archives --------------------------------------------------------------------------------
def _object_lines(stack: LocalStack, prefix: str) -> list[tuple[str, bytes]]:
    s3, bucket = stack.client("s3"), stack.status()["archive_bucket"]
    lines = []
    for key in stack.archive_keys():
        if key.startswith(prefix):
            body = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            lines += [(key, line) for line in body.split(b"\n") if line.strip()]
    return lines


def archive_accounts(stack: LocalStack, observed: Observed) -> list[Account]:
    delivery_service = {d["delivery_stream"]: _service_of_stream(observed.status, d["source"])
                        for d in observed.status["firehose"]}
    errors: dict[str, list[bytes]] = defaultdict(list)  # service -> raw records Firehose wrote under errors/
    for key, line in _object_lines(stack, TOPOLOGY.archive_error_prefix):
        name = key.rsplit("/", 1)[1].split("-1-", 1)[0]
        errors[delivery_service.get(name, "?")].append(base64.b64decode(json.loads(line)["rawData"]))
    out = []
    for service in TOPOLOGY.services:
        by_id = {e.event_id: e for e in observed.stores[service.name]}
        account = Account(f"archive:{service.name}", "archive", service.name, store=len(by_id))
        copies: dict[str, Counter[bytes]] = defaultdict(Counter)
        for _key, line in _object_lines(stack, f"{TOPOLOGY.archive_prefix}service={service.name}/"):
            try:
                event_id = json.loads(line)["event_id"]
            except (ValueError, KeyError, TypeError):
                account.other += 1
                continue
            if event_id in by_id:
                copies[event_id][line] += 1
            else:
                account.other += 1
        failed: set[str] = set()
        for raw in errors.get(service.name, []):
            envelope = _decoded(raw)
            if envelope is not None and envelope.event_id in by_id:
                failed.add(envelope.event_id)
            else:
                account.other += 1
        account.applied = len(copies)
        account.copies = sum(sum(c.values()) - 1 for c in copies.values())
        account.double_applied = sum(1 for c in copies.values() if len(c) > 1)  # copies that differ
        account.dlq = len(failed - copies.keys())
        account.lost = len(by_id.keys() - copies.keys() - failed)
        out.append(account)
    return out


def _service_of_stream(status: Mapping[str, Any], source: str) -> str:
    stream = source.split(":", 1)[1]
    return next((s for s, name in status["streams"].items() if name == stream), "?")


def account_for(stack: LocalStack) -> tuple[Observed, list[Account]]:
    observed = observe(stack)
    return observed, [*relay_accounts(stack, observed), *projection_accounts(stack, observed),
                      *archive_accounts(stack, observed)]
