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

from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from escore.dynamodb_store import EVENT_KIND, DynamoDBEventStore
from escore.envelope import Envelope, EnvelopeError, decode
from eventstack.resources import ResourceError, Resources
from eventstack.topology import TOPOLOGY


class StoreUnavailable(RuntimeError):
    """An event store cannot be read (endpoint down, table missing, access denied)."""


def by_correlation(correlation_id: str, dynamodb: Any, resources: Resources,
                   services: Iterable[str] | None = None) -> list[Envelope]:
    """Every stored event whose metadata's correlation_id is `correlation_id`, across services."""
    found: list[Envelope] = []
    for service in services if services is not None else [s.name for s in TOPOLOGY.services]:
        table = _table(resources, service)
        try:
            found.extend(_scan_correlation(dynamodb, table, correlation_id))
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


def _scan_correlation(dynamodb: Any, table: str, correlation_id: str) -> Iterator[Envelope]:
    request: dict[str, Any] = {
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
        for item in page.get("Items", []):
            try:
                envelope = decode(item["envelope"]["S"])
            except (EnvelopeError, KeyError):
                continue  # not an envelope: the archive's verify reports those, a trace does not
            if envelope.metadata.get("correlation_id") == correlation_id:
                yield envelope
        if "LastEvaluatedKey" not in page:
            return
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
