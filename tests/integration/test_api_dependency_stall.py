"""A stalled or flaky DynamoDB under the API (issue 9, defect 8).

- botocore retries a call whose answer was lost: the reservation's PutItem (or the completion's
  UpdateItem) then runs twice, and the second must recognise the first as its own, never answer the
  request 409 `idempotency_in_progress` against itself;
- a DynamoDB that does not answer (an endpoint that accepts connections and never replies, as a
  stopped emulation does) gives a timely 503 `service_unavailable` JSON answer with `Retry-After`,
  from the API's client with short timeouts, not a hang for as long as botocore's defaults allow.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from escore.dynamodb_store import DynamoDBEventStore
from escore.runtime import api_client_config
from escore.store import IdempotencyKey
from eventstack.topology import TOPOLOGY
from posts import api as posts_api
from profiles import api as profiles_api
from tests.support.api import ApiClient, expect_error, routes_of
from tests.support.aws import create_table
from tests.support.stores import mocked_aws

pytestmark = pytest.mark.integration

AUTHOR = "6f1c6b1e-0000-4000-8000-0000000000a1"


@pytest.fixture(scope="module")
def aws() -> Iterator[Any]:
    with mocked_aws() as client:
        yield client


class LostAnswers:
    """A DynamoDB client whose listed calls run twice, answering what the second run answers: what
    botocore's retry of a request whose answer was lost (a read timeout after the commit) looks like."""

    def __init__(self, client: Any, *operations: str) -> None:
        self._client = client
        self._operations = set(operations)
        self.repeated: list[str] = []

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._client, name)
        if name not in self._operations:
            return call

        def twice(**kwargs: Any) -> Any:
            call(**kwargs)
            self.repeated.append(name)
            return call(**kwargs)

        return twice


def table(aws: Any) -> str:
    return create_table(aws, TOPOLOGY.service("posts").event_store, f"posts_events_stall_{uuid.uuid4().hex[:8]}")


class TestARequestNeverConflictsWithItself:
    def test_a_retried_reservation_finds_its_own_lease(self, aws: Any) -> None:
        client = LostAnswers(aws, "put_item")
        store = DynamoDBEventStore(table(aws), client)
        record = store.begin_idempotent(IdempotencyKey("POST /posts", "k-1"), "hash-1")
        assert client.repeated == ["put_item"]
        assert record.status == "in_progress" and record.token

    def test_a_keyed_create_with_a_lost_answer_is_201_and_its_retry_the_same(self, aws: Any) -> None:
        client = LostAnswers(aws, "put_item", "transact_write_items")
        name = table(aws)
        api = ApiClient(posts_api.build({"SERVICE_NAME": "posts"}, DynamoDBEventStore(name, client)),
                        routes_of("posts"))
        key = {"Idempotency-Key": "create-1"}
        first = api.post("/posts", {"author_id": AUTHOR, "text": "hello"}, headers=key)
        assert first.status == 201, first
        again = api.post("/posts", {"author_id": AUTHOR, "text": "hello"}, headers=key)
        assert again.status == 201 and again.json == first.json
        assert len(DynamoDBEventStore(name, aws).read(f"post-{first.json['post_id']}")) == 1

    def test_a_retried_completion_of_a_command_that_appends_nothing_is_its_own(self, aws: Any) -> None:
        client = LostAnswers(aws, "update_item")
        store = DynamoDBEventStore(table(aws), client)
        from escore.store import IdempotencyCompletion

        record = store.begin_idempotent(IdempotencyKey("POST /x", "k-2"), "hash-2")
        store.complete_idempotent(IdempotencyCompletion(record, {"status_code": 200, "body": "{}"}))
        assert client.repeated == ["update_item"]
        replay = store.begin_idempotent(IdempotencyKey("POST /x", "k-2"), "hash-2")
        assert replay.status == "completed" and replay.response == {"status_code": 200, "body": "{}"}


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An endpoint that accepts TCP connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def stalled_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing", config=api_client_config())


class TestAStalledDynamoDB:
    def test_the_api_client_has_short_timeouts_and_few_attempts(self) -> None:
        config = api_client_config()
        assert config.connect_timeout <= 2 and config.read_timeout <= 3
        assert config.retries["total_max_attempts"] <= 3

    def test_the_services_build_their_dynamodb_clients_with_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        posts = posts_api.build({"EVENT_STORE_TABLE": "t", "HASHTAG_COUNTS_TABLE": "h"})
        assert posts.store._client.meta.config.read_timeout == api_client_config().read_timeout  # type: ignore[attr-defined]
        profiles = profiles_api.build({"EVENT_STORE_TABLE": "t", "USER_PROFILES_TABLE": "p",
                                       "USER_TIMELINE_TABLE": "l"})
        assert profiles.store._client.meta.config.read_timeout == api_client_config().read_timeout  # type: ignore[attr-defined]

    @pytest.mark.parametrize("keyed", [False, True])
    def test_a_command_gets_a_timely_retryable_503(self, silent_endpoint: str, keyed: bool) -> None:
        store = DynamoDBEventStore("posts_events", stalled_client(silent_endpoint))
        api = ApiClient(posts_api.build({"SERVICE_NAME": "posts"}, store), routes_of("posts"))
        started = time.monotonic()
        answer = api.post("/posts", {"author_id": AUTHOR, "text": "hello"},
                          headers={"Idempotency-Key": "k", "X-Correlation-Id": "stall-1"} if keyed
                          else {"X-Correlation-Id": "stall-1"},
                          allow_5xx=True)
        elapsed = time.monotonic() - started
        body = expect_error(answer, 503, "service_unavailable")
        assert answer.headers["Retry-After"].isdigit() and answer.correlation_id == "stall-1"
        assert "dynamodb" not in body["message"].lower() and "127.0.0.1" not in answer.body.decode()
        assert elapsed < 25, elapsed  # API Gateway gives up at 29 s

    def test_a_read_gets_a_503_too(self, silent_endpoint: str) -> None:
        store = DynamoDBEventStore("posts_events", stalled_client(silent_endpoint))
        api = ApiClient(posts_api.build({"SERVICE_NAME": "posts"}, store), routes_of("posts"))
        expect_error(api.get(f"/posts/{uuid.uuid4()}", allow_5xx=True), 503, "service_unavailable")
