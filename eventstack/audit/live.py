"""The live event stores, read for what the archive does not hold yet (`eventstack trace`, `history`).

Firehose delivers the archive in batches (up to its buffering interval late), so the newest events of
a request or a stream are often in a service's event store only. Two reads, both on the item layout
of escore.dynamodb_store (`{stream_id, version, kind: "event", event_id, type, envelope}`; the
`envelope` string is the source of truth):

- `by_correlation`: every service's store, a paginated Scan with a FilterExpression
  (`kind = "event"` and the envelope's text contains the correlation id as a JSON string), then the
  decoded envelope's `metadata.correlation_id` compared exactly. The table has no index on the
  correlation id, so a Scan reads (and bills) the whole table: about 1 read unit per 8 KB scanned
  with eventually consistent reads, whatever the filter keeps (docs/audit.md, "Trace and history").
- `by_stream`: one service's store, a Query on the stream's partition key (what the API reads).

Envelopes come back as stored (not upcast): the caller upcasts where it folds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from escore.dynamodb_store import EVENT_KIND, DynamoDBEventStore
from escore.envelope import Envelope, EnvelopeError, decode
from eventstack.resources import ResourceError, Resources
from eventstack.topology import TOPOLOGY


class StoreUnavailable(RuntimeError):
    """An event store cannot be read (endpoint down, table missing, access denied)."""


@dataclass
class Scanned:
    """What a Scan of the stores found, and what it cost: the items DynamoDB read (and billed) to find them."""

    events: list[Envelope] = field(default_factory=list)
    not_in_stage: list[str] = field(default_factory=list)  # services whose event store the stage does not list
    items_scanned: int = 0
    read_units: float = 0.0  # ConsumedCapacity as the endpoint reports it (moto: a flat 1 per page)


def by_correlation(correlation_id: str, dynamodb: Any, resources: Resources,
                   services: Iterable[str] | None = None) -> Scanned:
    """Every stored event whose metadata's correlation_id is `correlation_id`, across services.

    A service whose event store the stage's resources do not list (a service added to the code, the
    stage not yet deployed with it) is not searched and named in `not_in_stage`; a listed store that
    cannot be read is StoreUnavailable."""
    found = Scanned()
    for service in services if services is not None else [s.name for s in TOPOLOGY.services]:
        try:
            table = resources.event_store_table(service)
        except ResourceError:
            found.not_in_stage.append(service)
            continue
        try:
            _scan_correlation(dynamodb, table, correlation_id, found)
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnavailable(f"the event store {table} cannot be read: {exc}") from None
    return found


def by_stream(stream_id: str, service: str, dynamodb: Any, resources: Resources) -> list[Envelope]:
    """The stream's events in its service's store, in version order, as stored."""
    table = _table(resources, service)
    try:
        return DynamoDBEventStore(table, dynamodb).read(stream_id)
    except (BotoCoreError, ClientError) as exc:
        raise StoreUnavailable(f"the event store {table} cannot be read: {exc}") from None


def _table(resources: Resources, service: str) -> str:
    try:
        return resources.event_store_table(service)
    except ResourceError as exc:
        raise StoreUnavailable(str(exc)) from None


def _scan_correlation(dynamodb: Any, table: str, correlation_id: str, found: Scanned) -> None:
    request: dict[str, Any] = {
        "ReturnConsumedCapacity": "TOTAL",
        "TableName": table,
        "FilterExpression": "#kind = :event AND contains(#envelope, :needle)",
        "ProjectionExpression": "#envelope",
        "ExpressionAttributeNames": {"#kind": "kind", "#envelope": "envelope"},
        # the id as the envelope's compact JSON spells it (quotes and escapes included)
        "ExpressionAttributeValues": {":event": {"S": EVENT_KIND},
                                      ":needle": {"S": orjson.dumps(correlation_id).decode()}},
    }
    while True:
        page = dynamodb.scan(**request)
        found.items_scanned += int(page.get("ScannedCount", 0))
        found.read_units += float((page.get("ConsumedCapacity") or {}).get("CapacityUnits", 0.0))
        for item in page.get("Items", []):
            try:
                envelope = decode(item["envelope"]["S"])
            except (EnvelopeError, KeyError):
                continue  # not an envelope: the archive's verify reports those, a trace does not
            if envelope.metadata.get("correlation_id") == correlation_id:
                found.events.append(envelope)
        if "LastEvaluatedKey" not in page:
            return
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
