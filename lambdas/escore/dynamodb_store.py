"""DynamoDB EventStore: one table per service, key (stream_id S, version N).

Item layout (docs/architecture.md, "The event store table"):
- an event: `{stream_id, version >= 1, kind: "event", type, event_id, envelope}`, where `envelope` is
  the compact JSON of `escore.envelope.encode` and the source of truth;
- the store's own items, all at `version` 0 under a `stream_id` starting with `$`, so they never
  share a key with an event and the publisher skips them (`kind` is not "event"):
  `$claim#<scope>#<value>` (kind "claim", owner), `$idem#<method path>#<key>` (kind "idempotency",
  request_hash, status, token, lease_until, response, expires_at as TTL),
  `$snapshot#<stream_id>` (kind "snapshot", snapshot_version, state) and the publisher's attempt
  marks `$publish#<change record id>` (kind "publish", at, expires_at; `publisher.marks`).

An append is one TransactWriteItems: a ConditionCheck that the item at `expected_version` exists
(left out when it is 0), one Put per event conditioned on `attribute_not_exists`, the claims and
the idempotency completion. Versions are contiguous (every append checks both of its ends), so
"item `expected` exists and item `expected+1` does not" is exactly "the stream is at `expected`".

The common append, one event with no claim and no idempotency record, is a single conditional
PutItem (1 write unit instead of a transaction's 2 per item): the event's own key is the check
that the stream is not past `expected`, and the check that it is not behind is already known when
this store has seen item `expected` (events are immutable and never deleted, so an item once read
exists for ever). The store remembers the highest version it has read or written per stream
(`_known`, bounded); the repository always appends at a version it has just read, so its appends
take the single-put path, and an append at a version this store has never seen takes the
transaction, which checks it.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
from botocore.exceptions import ClientError

from escore.envelope import Envelope, decode, encode
from escore.runtime import aws_client
from escore.store import (
    IDEMPOTENCY_LEASE_SECONDS,
    IDEMPOTENCY_TTL_SECONDS,
    Claim,
    ClaimTaken,
    ConcurrencyError,
    EventStore,
    IdempotencyCompletion,
    IdempotencyInProgress,
    IdempotencyKey,
    IdempotencyKeyReused,
    IdempotencyRecord,
    Snapshot,
    check_append_size,
    check_contiguous,
)
from escore.upcasting import UpcasterRegistry

Item = dict[str, Any]

EVENT_KIND = "event"
CLAIM_KIND = "claim"
IDEMPOTENCY_KIND = "idempotency"
SNAPSHOT_KIND = "snapshot"

# A transaction cancelled only because another transaction held one of its items (or throttling)
# is tried again, with a new token, before the conflict is reported as the domain error it stands for.
TRANSACTION_ATTEMPTS = 3
_RETRYABLE = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})
KNOWN_VERSIONS_KEPT = 10_000  # streams whose highest seen version the store remembers


def claim_key(scope: str, value: str) -> str:
    return f"$claim#{scope}#{value}"


def idempotency_key(key: IdempotencyKey) -> str:
    return f"$idem#{key.id}"


def snapshot_key(stream_id: str) -> str:
    return f"$snapshot#{stream_id}"


class DynamoDBEventStore(EventStore):
    def __init__(
        self,
        table_name: str,
        client: Any | None = None,
        upcasters: UpcasterRegistry | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = aws_client("dynamodb", client)
        self._table = table_name
        # The service's contract's steps (escore.contract); None: events are read as stored.
        self._upcasters = upcasters
        self._clock = clock  # wall-clock seconds: leases and TTLs are compared inside DynamoDB
        # stream_id -> a version whose item this store has seen: it exists for ever (see the docstring).
        self._known: OrderedDict[str, int] = OrderedDict()

    def _saw(self, stream_id: str, version: int) -> None:
        if version <= 0:
            return
        known = self._known
        if known.get(stream_id, 0) < version:
            known[stream_id] = version
        known.move_to_end(stream_id)
        while len(known) > KNOWN_VERSIONS_KEPT:
            known.popitem(last=False)

    def _append_one(self, stream_id: str, expected_version: int, event: Envelope) -> int:
        """One event, no claim, no idempotency, `expected_version` known to exist: one PutItem."""
        put = self._event_put(event, return_old=True)["Put"]
        try:
            self._client.put_item(**put)
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            if _event_id({"Item": exc.response.get("Item") or {}}) == event.event_id:
                self._saw(stream_id, event.version)
                return event.version  # our own earlier attempt committed: its answer was lost
            raise ConcurrencyError(stream_id, expected_version, self.current_version(stream_id)) from None
        self._saw(stream_id, event.version)
        return event.version

    # events
    def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Envelope],
        *,
        claims: Sequence[Claim] = (),
        idempotency: IdempotencyCompletion | None = None,
    ) -> int:
        check_contiguous(stream_id, expected_version, events)
        response = orjson.dumps(idempotency.response).decode() if idempotency is not None else ""
        check_append_size(events, claims, idempotency is not None, response_bytes=len(response.encode()))
        new_version = expected_version + len(events)
        if (len(events) == 1 and not claims and idempotency is None
                and (expected_version == 0 or self._known.get(stream_id, 0) >= expected_version)):
            return self._append_one(stream_id, expected_version, events[0])

        # roles[i] says what TransactItems[i] stands for, to read the CancellationReasons back.
        roles: list[Claim | str] = []
        items: list[Item] = []
        if expected_version > 0:
            roles.append("version")
            items.append(self._version_check(stream_id, expected_version))
        for position, event in enumerate(events):
            roles.append("event")
            items.append(self._event_put(event, return_old=position == 0))
        for claim in claims:
            roles.append(claim)
            items.append(self._claim_put(claim))
        if idempotency is not None:
            roles.append("idempotency")
            items.append(self._completion_update(idempotency.reservation, response, transactional=True))

        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            try:
                # The token makes botocore's own retry of a request whose answer was lost a no-op on
                # AWS (moto ignores it; the event_id check below covers that case there too).
                self._client.transact_write_items(TransactItems=items, ClientRequestToken=uuid.uuid4().hex)
                self._saw(stream_id, new_version)
                return new_version
            except ClientError as exc:
                if _code(exc) != "TransactionCanceledException":
                    raise
                reasons: list[dict[str, Any]] = exc.response.get("CancellationReasons") or []
                codes = [str(reason.get("Code") or "None") for reason in reasons]
                failed = {i for i, code in enumerate(codes) if code == "ConditionalCheckFailed"}
                if not failed and attempt < TRANSACTION_ATTEMPTS and any(c in _RETRYABLE for c in codes):
                    time.sleep(0.01 * 2**attempt)
                    continue
                first_event = 1 if expected_version > 0 else 0
                if first_event in failed and _event_id(reasons[first_event]) == events[0].event_id:
                    self._saw(stream_id, new_version)
                    return new_version  # our own earlier attempt committed: its answer was lost
                # A conflict that outlasts the retries is another writer on the same item: the same
                # domain error as a failed condition. Anything else (throttling, validation) is raised.
                conflicts = {i for i, code in enumerate(codes) if code == "TransactionConflict"}
                blocked = [roles[i] for i in sorted(failed or conflicts) if i < len(roles)]
                if "version" in blocked or "event" in blocked:
                    raise ConcurrencyError(
                        stream_id, expected_version, self.current_version(stream_id)
                    ) from None
                for role in blocked:
                    if isinstance(role, Claim):
                        raise ClaimTaken(role) from None
                if "idempotency" in blocked and idempotency is not None:
                    raise IdempotencyInProgress(
                        f"reservation of {idempotency.reservation.key.id} is no longer held"
                    ) from None
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, stream_id: str, from_version: int = 1) -> list[Envelope]:
        events: list[Envelope] = []
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "stream_id = :stream AND version >= :from",
            "ExpressionAttributeValues": {
                ":stream": {"S": stream_id},
                ":from": {"N": str(max(from_version, 1))},
            },
            "ConsistentRead": True,
        }
        while True:
            page = self._client.query(**request)
            if self._upcasters is None:
                events.extend(decode(item["envelope"]["S"]) for item in page["Items"])
            else:
                events.extend(self._upcasters.upcast(decode(item["envelope"]["S"])) for item in page["Items"])
            if "LastEvaluatedKey" not in page:
                if events:
                    self._saw(stream_id, events[-1].version)
                return events
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def current_version(self, stream_id: str) -> int:
        page = self._client.query(
            TableName=self._table,
            KeyConditionExpression="stream_id = :stream AND version >= :one",
            ExpressionAttributeValues={":stream": {"S": stream_id}, ":one": {"N": "1"}},
            ProjectionExpression="version",
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
        )
        items: list[Item] = page["Items"]
        version = int(items[0]["version"]["N"]) if items else 0
        self._saw(stream_id, version)
        return version

    def iter_all(self) -> Iterator[Envelope]:
        """Every event as stored (not upcast): tooling compares it with the archive."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": "#kind = :event",
            "ProjectionExpression": "envelope",
            "ExpressionAttributeNames": {"#kind": "kind"},
            "ExpressionAttributeValues": {":event": {"S": EVENT_KIND}},
            "ConsistentRead": True,
        }
        while True:
            page = self._client.scan(**request)
            for item in page["Items"]:
                yield decode(item["envelope"]["S"])
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def claim_owner(self, scope: str, value: str) -> str | None:
        item = self._get(claim_key(scope, value))
        return str(item["owner"]["S"]) if item is not None else None

    # idempotency
    def begin_idempotent(self, key: IdempotencyKey, request_hash: str) -> IdempotencyRecord:
        record = IdempotencyRecord(key, request_hash, "in_progress", token=uuid.uuid4().hex)
        # Three tries: a record may expire or be abandoned between our Put and our look at it.
        for _ in range(3):
            now = self._clock()
            try:
                self._client.put_item(
                    TableName=self._table,
                    Item={
                        **self._key(idempotency_key(key)),
                        "kind": {"S": IDEMPOTENCY_KIND},
                        "scope": {"S": key.scope},
                        "idempotency_key": {"S": key.key},
                        "request_hash": {"S": request_hash},
                        "status": {"S": "in_progress"},
                        "token": {"S": record.token},
                        "lease_until": {"N": _seconds(now + IDEMPOTENCY_LEASE_SECONDS)},
                        "expires_at": {"N": str(int(now) + IDEMPOTENCY_TTL_SECONDS)},
                    },
                    # New, expired (TTL deletes lazily), or a lease that ran out on the same request.
                    ConditionExpression=(
                        "attribute_not_exists(stream_id) OR #expires_at < :now OR "
                        "(#status = :in_progress AND #lease_until < :now AND #request_hash = :hash)"
                    ),
                    ExpressionAttributeNames={
                        "#expires_at": "expires_at",
                        "#status": "status",
                        "#lease_until": "lease_until",
                        "#request_hash": "request_hash",
                    },
                    ExpressionAttributeValues={
                        ":now": {"N": _seconds(now)},
                        ":in_progress": {"S": "in_progress"},
                        ":hash": {"S": request_hash},
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return record
            except ClientError as exc:
                if _code(exc) != "ConditionalCheckFailedException":
                    raise
                old: Item | None = exc.response.get("Item") or self._get(idempotency_key(key))
            if old is None or float(old["expires_at"]["N"]) < now:
                continue
            if old["status"]["S"] == "in_progress" and old.get("token", {}).get("S") == record.token:
                # Our own Put committed and botocore retried it after its answer was lost: the lease
                # in the way is this request's, never a conflict with itself (issue 9, defect 8).
                return record
            if old["request_hash"]["S"] != request_hash:
                raise IdempotencyKeyReused(key.id)
            if old["status"]["S"] == "completed":
                return IdempotencyRecord(
                    key,
                    request_hash,
                    "completed",
                    response=orjson.loads(old["response"]["S"]),
                    token=old["token"]["S"],
                )
            if float(old["lease_until"]["N"]) >= now:
                raise IdempotencyInProgress(key.id)
        raise IdempotencyInProgress(key.id)

    def complete_idempotent(self, completion: IdempotencyCompletion) -> None:
        response = orjson.dumps(completion.response).decode()
        check_append_size((), (), True, response_bytes=len(response.encode()))
        update = self._completion_update(completion.reservation, response, transactional=False)
        try:
            self._client.update_item(**update)
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            held = self._get(idempotency_key(completion.reservation.key))
            if (held is not None and held["status"]["S"] == "completed"
                    and held.get("token", {}).get("S") == completion.reservation.token
                    and held.get("response", {}).get("S") == response):
                return  # this very update committed and was retried after its answer was lost
            raise IdempotencyInProgress(
                f"reservation of {completion.reservation.key.id} is no longer held"
            ) from None

    def abandon_idempotent(self, reservation: IdempotencyRecord) -> None:
        try:
            self._client.delete_item(
                TableName=self._table,
                Key=self._key(idempotency_key(reservation.key)),
                # Only our own reservation, and never a stored answer.
                ConditionExpression="#token = :token AND #status = :in_progress",
                ExpressionAttributeNames={"#token": "token", "#status": "status"},
                ExpressionAttributeValues={
                    ":token": {"S": reservation.token},
                    ":in_progress": {"S": "in_progress"},
                },
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise

    # snapshots
    def save_snapshot(self, snapshot: Snapshot) -> None:
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    **self._key(snapshot_key(snapshot.stream_id)),
                    "kind": {"S": SNAPSHOT_KIND},
                    "snapshot_version": {"N": str(snapshot.version)},
                    "state": {"S": orjson.dumps(snapshot.state).decode()},
                },
                # An older snapshot (a slow writer) never replaces a newer one.
                ConditionExpression="attribute_not_exists(stream_id) OR #snapshot_version < :version",
                ExpressionAttributeNames={"#snapshot_version": "snapshot_version"},
                ExpressionAttributeValues={":version": {"N": str(snapshot.version)}},
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise

    def load_snapshot(self, stream_id: str) -> Snapshot | None:
        item = self._get(snapshot_key(stream_id))
        if item is None:
            return None
        snapshot = Snapshot(stream_id, int(item["snapshot_version"]["N"]), orjson.loads(item["state"]["S"]))
        self._saw(stream_id, snapshot.version)  # a snapshot at v was taken of a stream that had v
        return snapshot

    # items
    def _key(self, stream_id: str, version: int = 0) -> Item:
        return {"stream_id": {"S": stream_id}, "version": {"N": str(version)}}

    def _get(self, stream_id: str) -> Item | None:
        item: Item | None = self._client.get_item(
            TableName=self._table, Key=self._key(stream_id), ConsistentRead=True
        ).get("Item")
        return item

    def _version_check(self, stream_id: str, expected_version: int) -> Item:
        return {
            "ConditionCheck": {
                "TableName": self._table,
                "Key": self._key(stream_id, expected_version),
                "ConditionExpression": "attribute_exists(stream_id)",
            }
        }

    def _event_put(self, event: Envelope, *, return_old: bool) -> Item:
        put: Item = {
            "TableName": self._table,
            "Item": {
                **self._key(event.stream_id, event.version),
                "kind": {"S": EVENT_KIND},
                "type": {"S": event.type},
                "event_id": {"S": event.event_id},
                "envelope": {"S": encode(event).decode()},
            },
            "ConditionExpression": "attribute_not_exists(stream_id)",
        }
        if return_old:  # to tell a lost answer to our own append from someone else's append
            put["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        return {"Put": put}

    def _claim_put(self, claim: Claim) -> Item:
        return {
            "Put": {
                "TableName": self._table,
                "Item": {
                    **self._key(claim_key(claim.scope, claim.value)),
                    "kind": {"S": CLAIM_KIND},
                    "scope": {"S": claim.scope},
                    "claim_value": {"S": claim.value},
                    "owner": {"S": claim.owner},
                },
                "ConditionExpression": "attribute_not_exists(stream_id) OR #owner = :owner",
                "ExpressionAttributeNames": {"#owner": "owner"},
                "ExpressionAttributeValues": {":owner": {"S": claim.owner}},
            }
        }

    def _completion_update(
        self, reservation: IdempotencyRecord, response: str, *, transactional: bool
    ) -> Item:
        update: Item = {
            "TableName": self._table,
            "Key": self._key(idempotency_key(reservation.key)),
            "UpdateExpression": (
                "SET #status = :completed, #response = :response, #expires_at = :expires REMOVE #lease_until"
            ),
            "ConditionExpression": "#status = :in_progress AND #token = :token",
            "ExpressionAttributeNames": {
                "#status": "status",
                "#response": "response",
                "#expires_at": "expires_at",
                "#lease_until": "lease_until",
                "#token": "token",
            },
            "ExpressionAttributeValues": {
                ":completed": {"S": "completed"},
                ":in_progress": {"S": "in_progress"},
                ":response": {"S": response},
                ":expires": {"N": str(int(self._clock()) + IDEMPOTENCY_TTL_SECONDS)},
                ":token": {"S": reservation.token},
            },
        }
        return {"Update": update} if transactional else update


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _event_id(reason: dict[str, Any]) -> str | None:
    item = reason.get("Item") or {}
    value = item.get("event_id", {}).get("S")
    return value if isinstance(value, str) else None


def _seconds(moment: float) -> str:
    return f"{moment:.3f}"
