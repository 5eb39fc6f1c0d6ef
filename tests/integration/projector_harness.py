"""A scenario of profiles and posts events, Kinesis delivery as Lambda does it (with faults), the
expected read models as a plain fold of the unique events, and a DynamoDB request counter."""

from __future__ import annotations

import base64
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from escore.envelope import Envelope, encode_record, format_timestamp, new_id
from escore.readmodel import is_tombstone
from escore.writes import VERSION_ATTRIBUTE
from posts.contract import hashtags

Handler = Callable[[dict[str, Any], Any], Any]

WRITE_OPERATIONS = {"TransactWriteItems", "BatchWriteItem", "PutItem", "UpdateItem", "DeleteItem"}
READ_OPERATIONS = {"BatchGetItem", "GetItem", "Query", "Scan", "TransactGetItems"}


# --- the scenario ---------------------------------------------------------------------------


def envelope(stream_id: str, version: int, type_: str, data: dict[str, Any], at: str,
             schema_version: int | None = None) -> Envelope:
    if schema_version is None:  # what the services write today (posts.schemas)
        schema_version = {"PostEdited": 3, "PostDeleted": 2}.get(type_, 1)
    service = "posts" if stream_id.startswith("post-") else "profiles"
    return Envelope(new_id(), stream_id, version, type_, schema_version, service, at, data,
                    {"correlation_id": new_id()})


@dataclass
class Scenario:
    profiles: list[list[Envelope]] = field(default_factory=list)  # streams, each in version order
    posts: list[list[Envelope]] = field(default_factory=list)
    users: list[str] = field(default_factory=list)  # registered
    authors: set[str] = field(default_factory=set)

    @property
    def events(self) -> list[Envelope]:
        return [e for stream in self.profiles + self.posts for e in stream]


def make_scenario(rng: random.Random, users: int, posts: int) -> Scenario:
    from datetime import UTC, datetime, timedelta

    moment = datetime(2024, 5, 1, tzinfo=UTC)

    def tick() -> str:
        nonlocal moment
        moment += timedelta(microseconds=rng.choice([0, 1, 250, 1000]))  # ties happen
        return format_timestamp(moment)

    scenario = Scenario()
    ids = [new_id() for _ in range(users + 3)]
    scenario.users = ids[:users]  # the last three post but never register
    for user in scenario.users:
        sid = f"user-{user}"
        stream = [envelope(sid, 1, "UserRegistered",
                           {"user_id": user, "handle": f"h{user[:8]}", "display_name": "first"}, tick())]
        for _ in range(rng.choice([0, 0, 1, 2])):
            kind = rng.choice(["DisplayNameChanged", "DisplayNameChanged", "HandleReserved"])  # one unknown
            data = {"display_name": f"name-{rng.randint(0, 999)}"} if kind == "DisplayNameChanged" else {}
            stream.append(envelope(sid, len(stream) + 1, kind, data, tick()))
        scenario.profiles.append(stream)
    for _ in range(posts):
        post, author = new_id(), rng.choice(ids)
        scenario.authors.add(author)
        sid = f"post-{post}"
        created_at = tick()
        stream = [envelope(sid, 1, "PostCreated", {"post_id": post, "author_id": author, "text": "v1"}, created_at)]
        facts = {"author_id": author, "created_at": created_at}  # what the posts domain puts in later events
        text = "v1"
        for _ in range(rng.choice([0, 0, 1, 2])):
            new = f"v{len(stream) + 1}"
            stream.append(envelope(sid, len(stream) + 1, "PostEdited",
                                   {"text": new, "tags": hashtags(new), **facts, "previous_tags": hashtags(text)},
                                   tick()))
            text = new
        if rng.random() < 0.3:
            stream.append(envelope(sid, len(stream) + 1, "PostDeleted", {**facts, "tags": hashtags(text)}, tick()))
        scenario.posts.append(stream)
    return scenario


# --- the expected read models: a plain fold of the unique events ------------------------------


@dataclass
class Expected:
    profiles: dict[str, dict[str, Any] | None]  # every user and author -> profile() answer
    post_counts: dict[str, int]
    timelines: dict[str, list[dict[str, Any]]]
    last_versions: dict[str, int]
    profile_versions: dict[str, int]  # user -> version of the last event that changed the profile

def expected_fold(scenario: Scenario) -> Expected:
    names: dict[str, dict[str, Any]] = {}
    posts: dict[str, dict[str, Any]] = {}
    last: dict[str, int] = {}
    profile_versions: dict[str, int] = {}
    for stream in scenario.profiles + scenario.posts:
        for e in stream:
            last[e.stream_id] = e.version
            if e.type in ("UserRegistered", "DisplayNameChanged"):
                profile_versions[e.stream_id.partition("-")[2]] = e.version
            if e.type == "UserRegistered":
                names[e.stream_id] = {"user_id": e.data["user_id"], "handle": e.data["handle"],
                                      "display_name": e.data["display_name"]}
            elif e.type == "DisplayNameChanged":
                names[e.stream_id]["display_name"] = e.data["display_name"]
            elif e.type == "PostCreated":
                posts[e.stream_id] = {"post_id": e.data["post_id"], "author": e.data["author_id"],
                                      "text": e.data["text"], "created_at": e.occurred_at, "live": True}
            elif e.type == "PostEdited" and posts[e.stream_id]["live"]:
                posts[e.stream_id]["text"] = e.data["text"]
            elif e.type == "PostDeleted":
                posts[e.stream_id]["live"] = False
    counts: Counter[str] = Counter(p["author"] for p in posts.values() if p["live"])
    timelines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in posts.values():
        if p["live"]:
            timelines[p["author"]].append({"post_id": p["post_id"], "text": p["text"], "created_at": p["created_at"]})
    for entries in timelines.values():
        entries.sort(key=lambda x: (x["created_at"], x["post_id"]), reverse=True)
    everyone = set(scenario.users) | scenario.authors
    by_user = {n["user_id"]: n for n in names.values()}
    profiles = {u: ({**by_user[u], "post_count": counts[u]} if u in by_user else None) for u in everyone}
    return Expected(profiles, {u: counts[u] for u in everyone},
                    {u: timelines.get(u, []) for u in everyone}, last, profile_versions)


# --- Kinesis delivery as Lambda does it -------------------------------------------------------


def kinesis_record(sequence: int | str, data: bytes, partition_key: str, stream: str = "test",
                   shard: str = "shardId-000000000000") -> dict[str, Any]:
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": str(sequence),
            "data": base64.b64encode(data).decode(),
            "approximateArrivalTimestamp": 1714521600.0,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard}:{sequence}",
        "eventName": "aws:kinesis:record",
        "awsRegion": "us-east-1",
        "eventSourceARN": f"arn:aws:kinesis:us-east-1:123456789012:stream/{stream}",
    }


def shard_log(rng: random.Random, streams: list[list[Envelope]], *, stream: str = "test",
              copies: tuple[int, int] = (1, 1), swap_p: float = 0.0) -> list[dict[str, Any]]:
    """One shard's records (of the Kinesis stream `stream`): streams interleaved, each event once
    (the publisher relays exactly once; re-delivery of records is `Mapping`'s), or with `copies`
    up to n times (a later copy a little further on, as a re-send would land: only owned items can
    tell such a copy from a new event), and with `swap_p` an event swapped with its successor in
    the stream (out of order, a few records apart)."""
    cursors = [list(s) for s in streams if s]
    order: list[Envelope] = []
    while cursors:
        stream = rng.choice(cursors)
        order.append(stream.pop(0))
        if not stream:
            cursors.remove(stream)
    slots: list[tuple[float, Envelope]] = []
    for index, event in enumerate(order):
        for copy in range(rng.randint(*copies)):
            slots.append((index + (rng.uniform(0, 15) if copy else 0.0), event))
    slots.sort(key=lambda slot: slot[0])
    events = [event for _, event in slots]
    if swap_p:
        for i in range(len(events)):
            if rng.random() < swap_p:
                for j in range(i + 1, min(i + 8, len(events))):
                    if events[j].stream_id == events[i].stream_id and events[j].version == events[i].version + 1:
                        events[i], events[j] = events[j], events[i]
                        break
    return [kinesis_record(seq, encode_record(e), e.stream_id, stream) for seq, e in enumerate(events, start=1)]


class Crash(BaseException):
    """The function dies mid-invocation (a timeout, an OOM): Lambda retries the whole batch."""


@dataclass
class Mapping:
    """One Kinesis event source mapping (one shard), as Lambda drives it with ReportBatchItemFailures
    and no limit on retries: from the lowest failed record on, again."""

    handler: Handler
    records: list[dict[str, Any]]
    batch_size: int
    rng: random.Random
    redeliver_p: float = 0.0  # a whole batch delivered twice
    position: int = 0
    invocations: int = 0
    reported_failures: int = 0
    crashes: int = 0

    @property
    def done(self) -> bool:
        return self.position >= len(self.records)

    def step(self) -> None:
        batch = self.records[self.position:self.position + self.batch_size]
        try:
            response = self._invoke(batch)
            if self.rng.random() < self.redeliver_p:
                response = self._invoke(batch)
        except Crash:
            self.crashes += 1
            return
        failures = [int(f["itemIdentifier"]) for f in response["batchItemFailures"]]
        if failures:
            self.reported_failures += 1
            lowest = min(failures)
            self.position = next(i for i, r in enumerate(self.records)
                                 if int(r["kinesis"]["sequenceNumber"]) == lowest)
        else:
            self.position += len(batch)

    def _invoke(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        self.invocations += 1
        result: dict[str, Any] = self.handler({"Records": batch}, None)
        return result


def drain(mappings: list[Mapping], rng: random.Random, max_invocations: int = 20_000) -> None:
    """Run mappings (concurrent sources of one projection) in a random interleaving until done."""
    while True:
        live = [m for m in mappings if not m.done]
        if not live:
            return
        rng.choice(live).step()
        if sum(m.invocations for m in mappings) > max_invocations:
            raise AssertionError("the mappings did not drain: a record keeps failing")


# --- faults and counting on the DynamoDB client ---------------------------------------------------


class FaultyDynamoDB:
    """Wraps a DynamoDB client; writes fail before writing (`fail_p`), fail after writing (an
    ambiguous answer, `ambiguous_p`) or kill the invocation after writing (`crash_p`)."""

    def __init__(self, client: Any, rng: random.Random, *, fail_p: float = 0.0, ambiguous_p: float = 0.0,
                 crash_p: float = 0.0, read_fail_p: float = 0.0) -> None:
        self._client = client
        self._rng = rng
        self.fail_p, self.ambiguous_p, self.crash_p, self.read_fail_p = fail_p, ambiguous_p, crash_p, read_fail_p
        self.injected: Counter[str] = Counter()

    def _write(self, operation: str, call: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        if self._rng.random() < self.fail_p:
            self.injected["failed"] += 1
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}}, operation)
        response = call(**kwargs)
        if self._rng.random() < self.ambiguous_p:
            self.injected["ambiguous"] += 1
            raise ClientError({"Error": {"Code": "RequestTimeout", "Message": "injected after commit"}}, operation)
        if self._rng.random() < self.crash_p:
            self.injected["crash"] += 1
            raise Crash()
        return response

    def put_item(self, **kwargs: Any) -> Any:
        return self._write("PutItem", self._client.put_item, kwargs)

    def update_item(self, **kwargs: Any) -> Any:
        return self._write("UpdateItem", self._client.update_item, kwargs)

    def transact_write_items(self, **kwargs: Any) -> Any:
        return self._write("TransactWriteItems", self._client.transact_write_items, kwargs)

    def batch_get_item(self, **kwargs: Any) -> Any:
        if self._rng.random() < self.read_fail_p:
            self.injected["read failed"] += 1
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}}, "BatchGetItem")
        return self._client.batch_get_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class RequestCounter:
    """Counts the DynamoDB API calls a client makes (botocore's before-call hook: one per call,
    retries not included) and the items written by transactions."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        self.transact_items = 0
        client.meta.events.register("before-call.dynamodb", self._count)
        client.meta.events.register("before-parameter-build.dynamodb.TransactWriteItems", self._items)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def _items(self, params: dict[str, Any], **_: Any) -> None:
        self.transact_items += len(params.get("TransactItems", []))

    @property
    def writes(self) -> int:
        return sum(n for op, n in self.calls.items() if op in WRITE_OPERATIONS)

    @property
    def reads(self) -> int:
        return sum(n for op, n in self.calls.items() if op in READ_OPERATIONS)

    def reset(self) -> None:
        self.calls.clear()
        self.transact_items = 0


def scan(client: Any, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    items: dict[tuple[str, str], dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = client.scan(**kwargs)
        for item in page["Items"]:
            items[(item["pk"]["S"], item["sk"]["S"])] = item
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def versions(items: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], int]:
    """The owned items' `_v` (their stream's last applied version), tombstones included."""
    return {key: int(item[VERSION_ATTRIBUTE]["N"]) for key, item in items.items() if VERSION_ATTRIBUTE in item}


def live(items: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The read-model items: no tombstones, no `$` items, and none of the engine's `_` attributes
    (watermarks differ with the positions a run happened to use)."""
    return {key: {n: v for n, v in item.items() if not n.startswith("_")} for key, item in items.items()
            if not key[0].startswith("$") and not is_tombstone(item)}


# --- moto speed ------------------------------------------------------------------------------


def deliveries(events: list[Envelope], namespace: str = "test:0", start: int = 1) -> list[Any]:
    """Events as one namespace delivers them, at consecutive positions in the order given."""
    from escore.engine import Delivery, position_of

    return [Delivery(e, namespace, position_of(start + i)) for i, e in enumerate(events)]


def planned_requests(spec: Any, batches: list[list[dict[str, Any]]]) -> int:
    """The write requests the engine makes for batches delivered once each, with no failure: one per
    owned item and one per (shared item, shard) touched in a batch, after coalescing."""
    from escore.envelope import decode

    total = 0
    for batch in batches:
        owned: set[tuple[str, str]] = set()
        shared: set[tuple[tuple[str, str], str]] = set()
        for record in batch:
            event = decode(base64.b64decode(record["kinesis"]["data"]))
            from tests.support.projectors import upcasters

            decoded = spec.decode(event, upcasters)
            if decoded is None:
                continue
            _, writes = decoded.apply({})
            for write in writes:
                if write.shared:
                    shared.add((write.key, record["eventSourceARN"] + record["eventID"].partition(":")[0]))
                else:
                    owned.add(write.key)
        total += len(owned) + len(shared)
    return total
