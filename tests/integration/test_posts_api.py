"""The posts API, route by route and error by error (docs/api.md "posts", "errors", "idempotency").

Every request is an API Gateway REST proxy event (eventstack.apigw) given to the real handler
(`posts.api.build`), on the in-memory store (unit tier) and on DynamoDB under moto (integration).
ApiClient checks on every answer: X-Correlation-Id, JSON, `{"error", "message"}` errors, no 5xx.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from escore.runtime import lazy
from escore.store import EventStore
from posts import api as posts_api
from tests.support.api import ApiClient, ApiResponse, expect_error, routes_of
from tests.support.lambda_context import LambdaContext
from tests.support.stores import STORE_KINDS, event_store, mocked_aws

AUTHOR = "6f1c6b1e-0000-4000-8000-0000000000a1"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class Posts:
    def __init__(self, store: EventStore, env: dict[str, str]) -> None:
        self.store = store
        self.client = ApiClient(posts_api.build(env, store), routes_of("posts"))

    def create(self, text: str = "hello", **kwargs: Any) -> str:
        response = self.client.post("/posts", {"author_id": AUTHOR, "text": text}, **kwargs)
        assert response.status == 201, response
        post_id: str = response.json["post_id"]
        return post_id

    def events(self, post_id: str) -> list[Any]:
        return self.store.read(f"post-{post_id}")

    def all_events(self) -> list[Any]:
        return list(self.store.iter_all())


@pytest.fixture(scope="module")
def aws() -> Iterator[Any]:
    with mocked_aws() as client:
        yield client


@pytest.fixture(params=STORE_KINDS)
def posts(request: pytest.FixtureRequest) -> Posts:
    return Posts(*event_store(request.param, "posts", request))


class TestCreate:
    def test_201_with_the_new_id_and_version_1(self, posts: Posts) -> None:
        response = posts.client.post("/posts", {"author_id": AUTHOR, "text": "hello"})
        assert response.status == 201
        assert set(response.json) == {"post_id", "version"} and response.json["version"] == 1
        post_id = response.json["post_id"]
        assert str(uuid.UUID(post_id)) == post_id
        [event] = posts.events(post_id)
        assert (event.type, event.stream_id, event.version, event.service) == (
            "PostCreated", f"post-{post_id}", 1, "posts",
        )
        assert event.schema_version == 2  # posts.schemas: `tags` added
        assert event.data == {"post_id": post_id, "author_id": AUTHOR, "text": "hello", "tags": []}

    def test_an_author_no_user_has_is_accepted(self, posts: Posts) -> None:
        assert posts.client.post("/posts", {"author_id": str(uuid.uuid4()), "text": "x"}).status == 201

    def test_text_of_1_to_2000_characters(self, posts: Posts) -> None:
        assert posts.client.post("/posts", {"author_id": AUTHOR, "text": "x" * 2000}).status == 201
        assert posts.client.post("/posts", {"author_id": AUTHOR, "text": "é"}).status == 201
        for text in ("", "x" * 2001, None, 5):
            body = expect_error(posts.client.post("/posts", {"author_id": AUTHOR, "text": text}), 422, "validation_error")
            assert body["detail"][0]["loc"] == ["body", "text"]

    def test_author_id_must_be_a_uuid(self, posts: Posts) -> None:
        for author in ("alice", "", 5):
            body = expect_error(posts.client.post("/posts", {"author_id": author, "text": "x"}), 422, "validation_error")
            assert body["detail"][0]["loc"] == ["body", "author_id"]

    def test_missing_and_unknown_fields_are_422(self, posts: Posts) -> None:
        body = expect_error(posts.client.post("/posts", {"text": "x", "title": "t"}), 422, "validation_error")
        assert {tuple(d["loc"]) for d in body["detail"]} == {("body", "author_id"), ("body", "title")}
        assert posts.all_events() == []


class TestRead:
    def test_the_post_as_last_written(self, posts: Posts) -> None:
        post_id = posts.create("first")
        body = posts.client.get(f"/posts/{post_id}").json
        assert body["post_id"] == post_id and body["author_id"] == AUTHOR and body["text"] == "first"
        assert body["version"] == 1
        assert TIMESTAMP.match(body["created_at"]) and body["updated_at"] == body["created_at"]
        assert posts.client.patch(f"/posts/{post_id}", {"text": "second", "expected_version": 1}).status == 200
        after = posts.client.get(f"/posts/{post_id}").json  # strongly consistent: no waiting
        assert (after["text"], after["version"], after["created_at"]) == ("second", 2, body["created_at"])
        assert after["updated_at"] >= after["created_at"] and TIMESTAMP.match(after["updated_at"])

    def test_unknown_or_malformed_id_is_404(self, posts: Posts) -> None:
        expect_error(posts.client.get(f"/posts/{uuid.uuid4()}"), 404, "not_found")
        expect_error(posts.client.get("/posts/not-a-uuid"), 404, "not_found")

    def test_only_the_canonical_id_finds_the_post(self, posts: Posts) -> None:
        post_id = posts.create()
        assert posts.client.get(f"/posts/{post_id}").json["post_id"] == post_id
        for loose in (post_id.upper(), "{" + post_id + "}", post_id.replace("-", ""), post_id + "%0A"):
            expect_error(posts.client.get(f"/posts/{loose}"), 404, "not_found")


class TestEdit:
    def test_200_with_the_new_version(self, posts: Posts) -> None:
        post_id = posts.create()
        response = posts.client.patch(f"/posts/{post_id}", {"text": "new", "expected_version": 1})
        assert (response.status, response.json) == (200, {"post_id": post_id, "version": 2})
        assert [e.type for e in posts.events(post_id)] == ["PostCreated", "PostEdited"]
        created, edited = posts.events(post_id)
        # schema 3: the post's facts ride along, for projections that fold each event alone
        assert edited.data == {"text": "new", "tags": [], "author_id": AUTHOR, "created_at": created.occurred_at,
                               "previous_tags": []}

    def test_a_stale_expected_version_is_409_with_the_current_one(self, posts: Posts) -> None:
        post_id = posts.create()
        posts.client.patch(f"/posts/{post_id}", {"text": "a", "expected_version": 1})
        body = expect_error(posts.client.patch(f"/posts/{post_id}", {"text": "b", "expected_version": 1}), 409, "conflict")
        assert body["current_version"] == 2
        body = expect_error(posts.client.patch(f"/posts/{post_id}", {"text": "b", "expected_version": 9}), 409, "conflict")
        assert body["current_version"] == 2
        assert len(posts.events(post_id)) == 2

    def test_expected_version_is_required_and_at_least_1(self, posts: Posts) -> None:
        post_id = posts.create()
        for body in ({"text": "a"}, {"text": "a", "expected_version": 0}, {"text": "a", "expected_version": -1},
                     {"text": "a", "expected_version": "1"}, {"text": "a", "expected_version": 1.5}):
            detail = expect_error(posts.client.patch(f"/posts/{post_id}", body), 422, "validation_error")["detail"]
            assert detail[0]["loc"] == ["body", "expected_version"]

    def test_unknown_post_is_404_after_the_body_checks(self, posts: Posts) -> None:
        path = f"/posts/{uuid.uuid4()}"
        expect_error(posts.client.patch(path, {"text": "a", "expected_version": 1}), 404, "not_found")
        expect_error(posts.client.patch(path, {"text": "", "expected_version": 1}), 422, "validation_error")
        expect_error(posts.client.patch(path, "{"), 400, "bad_request")

    def test_a_deleted_post_is_409(self, posts: Posts) -> None:
        post_id = posts.create()
        posts.client.delete(f"/posts/{post_id}")
        body = expect_error(posts.client.patch(f"/posts/{post_id}", {"text": "a", "expected_version": 2}), 409, "conflict")
        assert body["current_version"] == 2


class TestDelete:
    def test_200_with_the_new_version_then_gone(self, posts: Posts) -> None:
        post_id = posts.create()
        response = posts.client.delete(f"/posts/{post_id}")
        assert (response.status, response.json) == (200, {"post_id": post_id, "version": 2})
        created, deleted = posts.events(post_id)
        assert deleted.type == "PostDeleted"
        assert deleted.data == {"author_id": AUTHOR, "created_at": created.occurred_at, "tags": []}
        expect_error(posts.client.get(f"/posts/{post_id}"), 404, "not_found")

    def test_with_an_expected_version(self, posts: Posts) -> None:
        post_id = posts.create()
        body = expect_error(posts.client.delete(f"/posts/{post_id}", query={"expected_version": "2"}), 409, "conflict")
        assert body["current_version"] == 1
        assert posts.client.delete(f"/posts/{post_id}", query={"expected_version": "1"}).json["version"] == 2

    def test_already_deleted_is_409(self, posts: Posts) -> None:
        post_id = posts.create()
        posts.client.delete(f"/posts/{post_id}")
        body = expect_error(posts.client.delete(f"/posts/{post_id}"), 409, "conflict")
        assert body["current_version"] == 2
        assert len(posts.events(post_id)) == 2

    def test_a_bad_expected_version_is_422(self, posts: Posts) -> None:
        post_id = posts.create()
        for value in ("0", "-3", "abc", ""):
            detail = expect_error(posts.client.delete(f"/posts/{post_id}", query={"expected_version": value}),
                                  422, "validation_error")["detail"]
            assert detail[0]["loc"] == ["query", "expected_version"]
        assert len(posts.events(post_id)) == 1

    def test_unknown_post_is_404(self, posts: Posts) -> None:
        expect_error(posts.client.delete(f"/posts/{uuid.uuid4()}"), 404, "not_found")

    def test_any_body_is_ignored(self, posts: Posts) -> None:
        post_id = posts.create()
        response = posts.client.delete(f"/posts/{post_id}", body="{not json", headers={"Content-Type": "text/plain"})
        assert response.status == 200


class TestErrors:
    def test_unknown_route_is_404(self, posts: Posts) -> None:
        for path in ("/post", "/posts/a/b", "/users"):
            expect_error(posts.client.get(path), 404, "not_found")

    def test_wrong_method_is_405(self, posts: Posts) -> None:
        post_id = posts.create()
        response = posts.client.request("PUT", f"/posts/{post_id}", body={"text": "x"})
        assert expect_error(response, 405, "method_not_allowed") and response.headers["Allow"] == "DELETE, GET, PATCH"
        expect_error(posts.client.get("/posts"), 405, "method_not_allowed")
        expect_error(posts.client.delete("/posts"), 405, "method_not_allowed")

    def test_413_for_a_body_over_64_kib(self, posts: Posts) -> None:
        body = f'{{"author_id": "{AUTHOR}", "text": "{"x" * 70_000}"}}'
        expect_error(posts.client.post("/posts", body), 413, "payload_too_large")

    def test_400_for_malformed_non_object_or_wrongly_typed_bodies(self, posts: Posts) -> None:
        expect_error(posts.client.post("/posts", '{"author_id": '), 400, "bad_request")
        expect_error(posts.client.post("/posts", f'[{{"author_id": "{AUTHOR}", "text": "x"}}]'), 400, "bad_request")
        response = posts.client.post("/posts", f'{{"author_id": "{AUTHOR}", "text": "x"}}',
                                     headers={"Content-Type": "text/plain"})
        expect_error(response, 400, "bad_request")
        assert posts.all_events() == []

    def test_a_base64_encoded_body_is_read(self, posts: Posts) -> None:
        response = posts.client.post("/posts", {"author_id": AUTHOR, "text": "ünï"}, base64_body=True)
        assert response.status == 201
        assert posts.events(response.json["post_id"])[0].data["text"] == "ünï"


def create(posts: Posts, key: str, text: str = "hello") -> ApiResponse:
    return posts.client.post("/posts", {"author_id": AUTHOR, "text": text}, headers={"Idempotency-Key": key})


class TestIdempotency:
    def test_a_retried_create_returns_the_first_answer_and_appends_nothing(self, posts: Posts) -> None:
        first = create(posts, "k1")
        again = create(posts, "k1")
        assert (again.status, again.json) == (201, first.json)
        assert len(posts.all_events()) == 1

    def test_another_body_with_the_key_is_409(self, posts: Posts) -> None:
        create(posts, "k1")
        expect_error(create(posts, "k1", text="other"), 409, "idempotency_key_reused")
        assert len(posts.all_events()) == 1

    def test_another_key_is_another_post(self, posts: Posts) -> None:
        assert create(posts, "k1").json != create(posts, "k2").json
        assert len(posts.all_events()) == 2

    def test_a_retried_edit_or_delete_returns_the_first_answer(self, posts: Posts) -> None:
        post_id = posts.create()
        edit = {"text": "b", "expected_version": 1}
        first = posts.client.patch(f"/posts/{post_id}", edit, headers={"Idempotency-Key": "e"})
        again = posts.client.patch(f"/posts/{post_id}", edit, headers={"Idempotency-Key": "e"})
        assert (first.status, again.status, again.json) == (200, 200, first.json)
        deleted = posts.client.delete(f"/posts/{post_id}", headers={"Idempotency-Key": "d"})
        deleted_again = posts.client.delete(f"/posts/{post_id}", headers={"Idempotency-Key": "d"})
        assert (deleted_again.status, deleted_again.json) == (200, deleted.json)
        assert len(posts.events(post_id)) == 3

    def test_a_4xx_is_not_kept(self, posts: Posts) -> None:
        post_id = posts.create()
        ahead = {"text": "c", "expected_version": 2}
        key = {"Idempotency-Key": "s"}
        body = expect_error(posts.client.patch(f"/posts/{post_id}", ahead, headers=key), 409, "conflict")
        assert body["current_version"] == 1
        posts.client.patch(f"/posts/{post_id}", {"text": "b", "expected_version": 1})  # now at version 2
        retry = posts.client.patch(f"/posts/{post_id}", ahead, headers=key)  # evaluated afresh
        assert (retry.status, retry.json) == (200, {"post_id": post_id, "version": 3})

    def test_a_retry_while_the_first_runs_is_409(self, posts: Posts) -> None:
        from escore.http_idempotency import request_hash
        from escore.store import IdempotencyKey

        body = {"author_id": AUTHOR, "text": "hello"}
        posts.store.begin_idempotent(IdempotencyKey("POST /posts", "busy"), request_hash(body))
        expect_error(create(posts, "busy"), 409, "idempotency_in_progress")
        assert posts.all_events() == []


class TestCorrelation:
    def test_the_id_is_echoed_and_carried_by_the_events(self, posts: Posts) -> None:
        response = posts.client.post("/posts", {"author_id": AUTHOR, "text": "x"},
                                     headers={"X-Correlation-Id": "trace-42", "Idempotency-Key": "idem-1"})
        assert response.correlation_id == "trace-42"
        [event] = posts.events(response.json["post_id"])
        assert event.metadata["correlation_id"] == "trace-42"
        assert event.metadata["idempotency_key"] == "idem-1"
        assert event.metadata["causation_id"] == response.event["requestContext"]["requestId"]

    def test_a_new_id_when_none_is_sent(self, posts: Posts) -> None:
        response = posts.client.post("/posts", {"author_id": AUTHOR, "text": "x"})
        uuid.UUID(response.correlation_id)
        assert posts.events(response.json["post_id"])[0].metadata["correlation_id"] == response.correlation_id


@pytest.mark.integration
def test_the_lambda_entry_point_builds_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    _, env = event_store("dynamodb", "posts", request)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    entry = lazy(posts_api.build)  # what `posts.api.handler` is, built afresh: boto3's own client
    client = ApiClient(lambda event, _: entry(event, LambdaContext()), routes_of("posts"))
    post_id = client.post("/posts", {"author_id": AUTHOR, "text": "x"}).json["post_id"]
    assert client.get(f"/posts/{post_id}").json["text"] == "x"
