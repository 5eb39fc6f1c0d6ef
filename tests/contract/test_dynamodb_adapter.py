"""What only the DynamoDB adapter promises: its item layout, its requests, leases and TTLs, retries."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError

from escore.dynamodb_store import DynamoDBEventStore
from escore.envelope import decode
from escore.store import (
    IDEMPOTENCY_LEASE_SECONDS,
    IDEMPOTENCY_TTL_SECONDS,
    Claim,
    ConcurrencyError,
    IdempotencyCompletion,
    IdempotencyInProgress,
    IdempotencyKey,
    IdempotencyKeyReused,
    Snapshot,
)
from tests.contract.kit import EVENT_STORE_TABLE, event, events, stream
from tests.support.aws import create_table

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table(mocked_dynamodb: Any) -> str:
    return create_table(mocked_dynamodb, EVENT_STORE_TABLE, f"posts_events-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def requests(mocked_dynamodb: Any) -> Iterator[Counter[str]]:
    """The DynamoDB operations the client sends, counted by name (botocore's own event hook)."""
    sent: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        sent[model.name] += 1

    mocked_dynamodb.meta.events.register("before-call.dynamodb", count)
    yield sent
    mocked_dynamodb.meta.events.unregister("before-call.dynamodb", count)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(mocked_dynamodb: Any, table: str, clock: Clock) -> DynamoDBEventStore:
    return DynamoDBEventStore(table, client=mocked_dynamodb, clock=clock)


def raw_item(client: Any, table: str, stream_id: str, version: int = 0) -> dict[str, Any]:
    key = {"stream_id": {"S": stream_id}, "version": {"N": str(version)}}
    item: dict[str, Any] = client.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
    return item


def test_the_table_is_made_as_the_topology_declares(mocked_dynamodb: Any, table: str) -> None:
    described = mocked_dynamodb.describe_table(TableName=table)["Table"]
    assert {k["AttributeName"]: k["KeyType"] for k in described["KeySchema"]} == {
        "stream_id": "HASH",
        "version": "RANGE",
    }
    assert described["StreamSpecification"]["StreamViewType"] == "NEW_IMAGE"
    ttl = mocked_dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"


def test_item_layout(mocked_dynamodb: Any, table: str, store: DynamoDBEventStore, clock: Clock) -> None:
    sid = stream()
    written = event(sid, 1, "PostCreated", text="hi")
    key = IdempotencyKey("POST /posts", "k1")
    reservation = store.begin_idempotent(key, "h")
    answer = {"status_code": 201, "body": {"post_id": sid}}
    store.append(
        sid,
        0,
        [written],
        claims=[Claim("handle", "alice", sid)],
        idempotency=IdempotencyCompletion(reservation, answer),
    )
    store.save_snapshot(Snapshot(sid, 1, {"text": "hi"}))

    item = raw_item(mocked_dynamodb, table, sid, 1)
    assert {name: next(iter(v.values())) for name, v in item.items() if name != "envelope"} == {
        "stream_id": sid,
        "version": "1",
        "kind": "event",
        "type": "PostCreated",
        "event_id": written.event_id,
    }
    assert decode(item["envelope"]["S"]) == written
    assert b": " not in item["envelope"]["S"].encode()  # compact JSON

    claim = raw_item(mocked_dynamodb, table, "$claim#handle#alice")
    assert (claim["kind"]["S"], claim["owner"]["S"]) == ("claim", sid)
    idem = raw_item(mocked_dynamodb, table, "$idem#POST /posts#k1")
    assert (idem["kind"]["S"], idem["status"]["S"]) == ("idempotency", "completed")
    assert orjson.loads(idem["response"]["S"]) == answer
    assert "lease_until" not in idem
    # Durable: kept for days (TTL), not a one-hour cache.
    assert int(idem["expires_at"]["N"]) == int(clock.now) + IDEMPOTENCY_TTL_SECONDS
    snap = raw_item(mocked_dynamodb, table, f"$snapshot#{sid}")
    assert (snap["kind"]["S"], snap["snapshot_version"]["N"]) == ("snapshot", "1")


def test_one_transaction_per_append_and_one_query_per_read(
    mocked_dynamodb: Any, store: DynamoDBEventStore, requests: Counter[str]
) -> None:
    sid = stream()
    reservation = store.begin_idempotent(IdempotencyKey("POST /posts", "k"), "h")
    requests.clear()
    store.append(sid, 0, events(sid, 0, 3), claims=[Claim("handle", "x", sid)])
    store.append(sid, 3, events(sid, 3, 2), idempotency=IdempotencyCompletion(reservation, {}))
    assert requests == Counter(TransactWriteItems=2)
    requests.clear()
    assert len(store.read(sid)) == 5
    assert store.current_version(sid) == 5
    assert requests == Counter(Query=2)


def test_a_conflict_costs_one_more_query_for_the_current_version(
    store: DynamoDBEventStore, requests: Counter[str]
) -> None:
    sid = stream()
    store.append(sid, 0, events(sid, 0, 2))
    requests.clear()
    with pytest.raises(ConcurrencyError):
        store.append(sid, 1, events(sid, 1, 1))
    assert requests == Counter(PutItem=1, Query=1)
    requests.clear()
    with pytest.raises(ConcurrencyError):
        store.append(sid, 1, events(sid, 1, 2))
    assert requests == Counter(TransactWriteItems=1, Query=1)


def test_a_one_event_append_at_a_version_the_store_has_seen_is_one_put_item(
    mocked_dynamodb: Any, store: DynamoDBEventStore, requests: Counter[str]
) -> None:
    sid = stream()
    store.append(sid, 0, events(sid, 0, 1))  # a new stream: nothing to check but the key
    assert requests == Counter(PutItem=1)
    requests.clear()
    assert store.current_version(sid) == 1
    store.append(sid, 1, events(sid, 1, 1))  # the repository's path: read, then append
    assert requests == Counter(Query=1, PutItem=1)


def test_a_one_event_append_at_a_version_never_seen_is_checked_by_a_transaction(
    mocked_dynamodb: Any, table: str, requests: Counter[str]
) -> None:
    writer, other = DynamoDBEventStore(table, mocked_dynamodb), DynamoDBEventStore(table, mocked_dynamodb)
    sid = stream()
    writer.append(sid, 0, events(sid, 0, 2))
    requests.clear()
    other.append(sid, 2, events(sid, 2, 1))  # `other` never saw version 2: it checks it
    assert requests == Counter(TransactWriteItems=1)
    requests.clear()
    with pytest.raises(ConcurrencyError):
        other.append(sid, 5, events(sid, 5, 1))  # ahead: a gap would follow; refused, nothing written
    assert requests["PutItem"] == 0
    assert other.current_version(sid) == 3


def test_a_lost_answer_to_a_single_put_append_is_the_same_append(
    store: DynamoDBEventStore,
) -> None:
    sid = stream()
    first = events(sid, 0, 1)
    assert store.append(sid, 0, first) == 1
    assert store.append(sid, 0, first) == 1  # the retry of an append that succeeded
    assert [e.event_id for e in store.read(sid)] == [first[0].event_id]
    with pytest.raises(ConcurrencyError):
        store.append(sid, 0, events(sid, 0, 1))  # another event at the same version conflicts


def test_begin_is_one_conditional_put_whatever_it_finds(
    store: DynamoDBEventStore, requests: Counter[str]
) -> None:
    key = IdempotencyKey("POST /posts", "k")
    reservation = store.begin_idempotent(key, "h")
    with pytest.raises(IdempotencyInProgress):
        store.begin_idempotent(key, "h")
    store.complete_idempotent(IdempotencyCompletion(reservation, {"status_code": 201}))
    requests.clear()
    assert store.begin_idempotent(key, "h").status == "completed"
    assert requests == Counter(PutItem=1)


def test_an_expired_lease_is_taken_over_by_the_same_request_only(
    store: DynamoDBEventStore, clock: Clock
) -> None:
    key = IdempotencyKey("POST /users", "k")
    crashed = store.begin_idempotent(key, "h")
    clock.now += IDEMPOTENCY_LEASE_SECONDS - 1
    with pytest.raises(IdempotencyInProgress):
        store.begin_idempotent(key, "h")
    clock.now += 2
    with pytest.raises(IdempotencyKeyReused):
        store.begin_idempotent(key, "other")
    retry = store.begin_idempotent(key, "h")
    assert retry.status == "in_progress" and retry.token != crashed.token
    # The first holder, back from the dead, can no longer write its answer or its events.
    sid = stream()
    with pytest.raises(IdempotencyInProgress):
        store.append(sid, 0, events(sid, 0, 1), idempotency=IdempotencyCompletion(crashed, {}))
    assert store.current_version(sid) == 0
    store.complete_idempotent(IdempotencyCompletion(retry, {"status_code": 201}))


def test_a_record_past_its_ttl_counts_as_gone_before_dynamodb_deletes_it(
    store: DynamoDBEventStore, clock: Clock
) -> None:
    key = IdempotencyKey("POST /users", "k")
    store.complete_idempotent(IdempotencyCompletion(store.begin_idempotent(key, "h"), {"status_code": 201}))
    clock.now += IDEMPOTENCY_TTL_SECONDS + 1
    assert store.begin_idempotent(key, "another body").status == "in_progress"


class FlakyTransactions:
    """The real client, but TransactWriteItems is first cancelled `conflicts` times (`code` on its first item)."""

    def __init__(self, client: Any, conflicts: int, code: str = "TransactionConflict") -> None:
        self._client = client
        self.conflicts = conflicts
        self.code = code
        self.attempts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def transact_write_items(self, **request: Any) -> Any:
        self.attempts += 1
        if self.conflicts:
            self.conflicts -= 1
            reasons = [{"Code": self.code}] + [{"Code": "None"}] * (len(request["TransactItems"]) - 1)
            error = {"Error": {"Code": "TransactionCanceledException"}, "CancellationReasons": reasons}
            raise ClientError(error, "TransactWriteItems")
        return self._client.transact_write_items(**request)


def test_a_transaction_conflict_is_tried_again(mocked_dynamodb: Any, table: str) -> None:
    flaky = FlakyTransactions(mocked_dynamodb, conflicts=2)
    store = DynamoDBEventStore(table, client=flaky)
    sid = stream()
    assert store.append(sid, 0, events(sid, 0, 2)) == 2  # two events: a transaction
    assert flaky.attempts == 3


def test_a_lasting_conflict_is_a_concurrency_error(mocked_dynamodb: Any, table: str) -> None:
    flaky = FlakyTransactions(mocked_dynamodb, conflicts=10)
    store = DynamoDBEventStore(table, client=flaky)
    sid = stream()
    with pytest.raises(ConcurrencyError):
        store.append(sid, 0, events(sid, 0, 2))
    assert store.current_version(sid) == 0


def test_other_failures_are_not_dressed_up_as_domain_errors(mocked_dynamodb: Any, table: str) -> None:
    sid = stream()
    with pytest.raises(ClientError):
        DynamoDBEventStore("no-such-table", client=mocked_dynamodb).append(sid, 0, events(sid, 0, 1))
    throttled = FlakyTransactions(mocked_dynamodb, conflicts=10, code="ThrottlingError")
    with pytest.raises(ClientError) as caught:
        DynamoDBEventStore(table, client=throttled).append(sid, 0, events(sid, 0, 2))
    assert caught.value.response["CancellationReasons"][0]["Code"] == "ThrottlingError"
    assert throttled.attempts == 3
