"""escore.http (the REST plumbing both APIs share) and eventstack.apigw (API Gateway events).

A toy API exercises the plumbing alone: routing, the order of checks, bodies, errors, correlation
ids, idempotency. The services' own routes are in tests/integration/test_*_api.py.
"""

from __future__ import annotations

import base64
import threading
import uuid
from typing import Annotated, Any, ClassVar

import pytest
from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from escore.aggregate import CommandContext
from escore.http import JsonApi
from escore.http_errors import HttpError
from escore.http_idempotency import request_hash
from escore.http_requests import MAX_BODY_BYTES
from escore.memory_store import InMemoryEventStore
from escore.store import IdempotencyKey
from eventstack.apigw import Headers, RouteMatch, RouteMiss, match_route, parse_proxy_result, rest_event
from eventstack.topology import TOPOLOGY, Route
from tests.support.api import ApiClient, expect_error

pytestmark = pytest.mark.unit


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(min_length=1, max_length=70000)


class Toy:
    """A JsonApi with a few routes that record what they were called with."""

    def __init__(self) -> None:
        self.store = InMemoryEventStore()
        self.api = JsonApi("toy", self.store)
        self.calls: list[tuple[str, Any]] = []
        self.fail_next: list[Exception] = []
        self.contexts: list[CommandContext] = []
        api = self.api

        @api.post("/things", status=201)
        def create(body: Thing) -> dict[str, Any]:
            return self._run("create", body.name)

        @api.get("/things/{thing_id}")
        def read(thing_id: str, limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
            return self._run("read", (thing_id, limit))

        @api.delete("/things/{thing_id}")
        def remove(thing_id: str) -> dict[str, Any]:
            return self._run("remove", thing_id)

        @api.get("/things/special")
        def special() -> dict[str, Any]:
            return self._run("special", None)

        self.client = ApiClient(api, [Route(s.method, s.template) for s in api.routes])

    def _run(self, name: str, argument: Any) -> dict[str, Any]:
        self.contexts.append(self.api.command)
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.calls.append((name, argument))
        return {"call": name, "argument": argument, "n": len(self.calls)}


@pytest.fixture
def toy() -> Toy:
    return Toy()


class TestRoutes:
    def test_a_route_answers_with_its_status(self, toy: Toy) -> None:
        response = toy.client.post("/things", {"name": "a"})
        assert (response.status, response.json) == (201, {"call": "create", "argument": "a", "n": 1})
        assert toy.client.get("/things/x1").json["argument"] == ["x1", 10]

    def test_literal_segments_beat_parameters(self, toy: Toy) -> None:
        assert toy.client.get("/things/special").json["call"] == "special"

    def test_a_trailing_or_doubled_slash_is_the_same_path(self, toy: Toy) -> None:
        assert toy.client.post("/things/", {"name": "a"}).status == 201
        assert toy.client.get("//things/x1/").json["argument"] == ["x1", 10]

    def test_unknown_route_is_404(self, toy: Toy) -> None:
        for path in ("/nothing", "/things/a/b", "/"):
            expect_error(toy.client.get(path), 404, "not_found")

    def test_wrong_method_on_a_known_path_is_405_with_allow(self, toy: Toy) -> None:
        response = toy.client.request("PUT", "/things/x1", body={"name": "a"})
        expect_error(response, 405, "method_not_allowed")
        assert response.headers["Allow"] == "DELETE, GET"
        assert toy.client.get("/things").headers["Allow"] == "POST"
        assert toy.calls == []

    def test_a_route_error_is_its_json(self, toy: Toy) -> None:
        toy.fail_next.append(HttpError(409, "conflict", "no", current_version=3))
        body = expect_error(toy.client.get("/things/x"), 409, "conflict")
        assert body == {"error": "conflict", "message": "no", "current_version": 3}

    def test_an_unexpected_exception_is_a_bare_500(self, toy: Toy) -> None:
        toy.fail_next.append(RuntimeError("arn:aws:dynamodb:us-east-1:1:table/secret exploded"))
        response = toy.client.get("/things/x", allow_5xx=True)
        assert response.status == 500
        assert response.json == {"error": "internal_error", "message": "internal error"}


class TestRequestChecks:
    def test_413_over_64_kib(self, toy: Toy) -> None:
        at_limit = '{"name": "' + "a" * (MAX_BODY_BYTES - 12) + '"}'
        assert len(at_limit.encode()) == MAX_BODY_BYTES
        assert toy.client.post("/things", at_limit).status == 201
        expect_error(toy.client.post("/things", at_limit + " "), 413, "payload_too_large")

    def test_413_counts_bytes_not_characters(self, toy: Toy) -> None:
        body = '{"name": "' + "é" * 33000 + '"}'  # 66,012 bytes, 33,012 characters
        expect_error(toy.client.post("/things", body), 413, "payload_too_large")

    def test_malformed_json_is_400(self, toy: Toy) -> None:
        for body in ('{"name": ', "{'name': 'a'}", '{"name": "a"} x', "NaN", b"\xff\xfe{}"):
            expect_error(toy.client.post("/things", body), 400, "bad_request")

    def test_valid_json_the_codec_cannot_hold_is_422_not_400_nor_500(self, toy: Toy) -> None:
        body = expect_error(toy.client.post("/things", '{"name": "\\ud800"}'), 422, "validation_error")
        assert body["detail"][0]["loc"] == ["body", "name"]  # the field holding the unpaired surrogate

    def test_a_body_that_is_not_an_object_is_400(self, toy: Toy) -> None:
        for body in ("[]", '["a"]', '"a"', "1", "null", "true"):
            expect_error(toy.client.post("/things", body), 400, "bad_request")

    def test_a_missing_body_is_400(self, toy: Toy) -> None:
        expect_error(toy.client.post("/things"), 400, "bad_request")
        expect_error(toy.client.post("/things", "  "), 400, "bad_request")

    def test_wrong_content_type_is_400(self, toy: Toy) -> None:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x"):
            response = toy.client.post("/things", '{"name": "a"}', headers={"Content-Type": content_type})
            expect_error(response, 400, "bad_request")

    def test_json_content_types_are_accepted_and_none_means_json(self, toy: Toy) -> None:
        for headers in ({"content-type": "application/json; charset=utf-8"}, {"Content-Type": "application/problem+json"}, {}):
            assert toy.client.post("/things", '{"name": "a"}', headers=headers).status == 201

    def test_a_base64_encoded_body_is_decoded(self, toy: Toy) -> None:
        response = toy.client.post("/things", {"name": "ünïcode"}, base64_body=True)
        assert response.event["isBase64Encoded"] is True
        assert (response.status, response.json["argument"]) == (201, "ünïcode")

    def test_invalid_base64_is_400(self, toy: Toy) -> None:
        event = rest_event("POST", "/things", body="not base64!", headers={"Content-Type": "application/json"})
        event["isBase64Encoded"] = True
        status, _, body = parse_proxy_result(toy.api(event, None))
        assert status == 400 and b"bad_request" in body

    def test_unknown_and_invalid_fields_are_422_with_detail(self, toy: Toy) -> None:
        body = expect_error(toy.client.post("/things", {"name": "", "extra": 1}), 422, "validation_error")
        fields = {tuple(item["loc"]) for item in body["detail"]}
        assert fields == {("body", "name"), ("body", "extra")}
        assert all(set(item) == {"loc", "type", "msg"} for item in body["detail"])

    def test_a_wrong_type_is_422_not_coerced(self, toy: Toy) -> None:
        expect_error(toy.client.post("/things", {"name": 5}), 422, "validation_error")

    def test_bad_query_parameters_are_422(self, toy: Toy) -> None:
        for limit in ("abc", "0", "101", "1.5", ""):
            body = expect_error(toy.client.get("/things/x", query={"limit": limit}), 422, "validation_error")
            assert body["detail"][0]["loc"] == ["query", "limit"]

    def test_a_get_or_delete_ignores_any_body(self, toy: Toy) -> None:
        headers = {"Content-Type": "text/plain"}
        assert toy.client.get("/things/x", body="x" * 100_000, headers=headers).status == 200
        assert toy.client.delete("/things/x", body="{bad", headers=headers).status == 200

    def test_checks_run_in_the_contract_s_order(self, toy: Toy) -> None:
        huge_bad = "{" * (MAX_BODY_BYTES + 1)
        text = {"Content-Type": "text/plain"}
        expect_error(toy.client.post("/nothing", huge_bad, headers=text), 404, "not_found")
        expect_error(toy.client.request("PATCH", "/things", body=huge_bad, headers=text), 405, "method_not_allowed")
        expect_error(toy.client.post("/things", huge_bad, headers=text), 413, "payload_too_large")
        expect_error(toy.client.post("/things", '{"extra": 1}', headers=text), 400, "bad_request")
        expect_error(toy.client.post("/things", "[", headers={"Idempotency-Key": "x" * 300}), 400, "bad_request")
        expect_error(toy.client.post("/things", {"name": "a"}, headers={"Idempotency-Key": "x" * 300}),
                     422, "validation_error")
        assert toy.calls == []


class TestCorrelationId:
    def test_the_request_s_id_is_echoed_and_given_to_the_command(self, toy: Toy) -> None:
        response = toy.client.post("/things", {"name": "a"}, headers={"x-correlation-id": "abc-123"})
        assert response.correlation_id == "abc-123"
        assert toy.contexts[-1].correlation_id == "abc-123"
        assert toy.contexts[-1].causation_id == response.event["requestContext"]["requestId"]

    def test_a_new_id_when_there_is_none_even_on_errors(self, toy: Toy) -> None:
        for response in (toy.client.get("/things/x"), toy.client.get("/nothing"), toy.client.post("/things", "[")):
            uuid.UUID(response.correlation_id)

    def test_an_unusable_id_is_replaced(self, toy: Toy) -> None:
        for bad in ("x" * 500, "line\nbreak"):
            response = toy.client.get("/things/x", headers={"X-Correlation-Id": bad})
            uuid.UUID(response.correlation_id)


class TestIdempotency:
    key: ClassVar[dict[str, str]] = {"Idempotency-Key": "key-1"}

    def test_a_retry_returns_the_first_answer_and_runs_nothing(self, toy: Toy) -> None:
        first = toy.client.post("/things", {"name": "a"}, headers=self.key)
        again = toy.client.post("/things", {"name": "a"}, headers=self.key)
        assert (again.status, again.json) == (first.status, first.json) == (201, first.json)
        assert again.headers["Idempotent-Replayed"] == "true"
        assert len(toy.calls) == 1

    def test_equal_json_is_the_same_body(self, toy: Toy) -> None:
        toy.client.post("/things", '{"name": "a"}', headers=self.key)
        assert toy.client.post("/things", '{ "name" :"a" }', headers=self.key).status == 201
        assert len(toy.calls) == 1
        assert request_hash({"a": 1, "b": [1, 2]}) == request_hash({"b": [1, 2], "a": 1})

    def test_another_body_is_409_idempotency_key_reused(self, toy: Toy) -> None:
        toy.client.post("/things", {"name": "a"}, headers=self.key)
        expect_error(toy.client.post("/things", {"name": "b"}, headers=self.key), 409, "idempotency_key_reused")
        assert len(toy.calls) == 1

    def test_a_key_is_scoped_to_method_and_path(self, toy: Toy) -> None:
        toy.client.delete("/things/a", headers=self.key)
        toy.client.delete("/things/b", headers=self.key)
        toy.client.post("/things", {"name": "a"}, headers=self.key)
        assert [call for call, _ in toy.calls] == ["remove", "remove", "create"]

    def test_only_2xx_answers_are_kept(self, toy: Toy) -> None:
        toy.fail_next.append(HttpError(409, "conflict", "not now"))
        expect_error(toy.client.post("/things", {"name": "a"}, headers=self.key), 409, "conflict")
        assert toy.client.post("/things", {"name": "a"}, headers=self.key).status == 201
        assert len(toy.calls) == 1

    def test_a_crash_frees_the_key(self, toy: Toy) -> None:
        toy.fail_next.append(RuntimeError("boom"))
        assert toy.client.post("/things", {"name": "a"}, headers=self.key, allow_5xx=True).status == 500
        assert toy.client.post("/things", {"name": "a"}, headers=self.key).status == 201

    def test_a_422_does_not_reserve_the_key(self, toy: Toy) -> None:
        expect_error(toy.client.post("/things", {"name": ""}, headers=self.key), 422, "validation_error")
        assert toy.client.post("/things", {"name": "a"}, headers=self.key).status == 201

    def test_a_retry_while_the_first_runs_is_409_in_progress(self, toy: Toy) -> None:
        toy.store.begin_idempotent(IdempotencyKey("POST /things", "key-1"), request_hash({"name": "a"}))
        response = toy.client.post("/things", {"name": "a"}, headers=self.key)
        expect_error(response, 409, "idempotency_in_progress")
        assert toy.calls == []

    def test_the_key_reaches_the_command(self, toy: Toy) -> None:
        toy.client.post("/things", {"name": "a"}, headers=self.key)
        context = toy.contexts[-1]
        assert context.idempotency_key == "key-1" and context.reservation is not None
        assert context.success_status == 201

    def test_gets_ignore_the_key(self, toy: Toy) -> None:
        toy.client.get("/things/x", headers=self.key)
        toy.client.get("/things/x", headers=self.key)
        assert len(toy.calls) == 2


class TestConcurrentRequests:
    def test_requests_in_threads_do_not_see_each_other(self, toy: Toy) -> None:
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            try:
                for i in range(20):
                    response = toy.client.get(f"/things/t{n}-{i}", headers={"X-Correlation-Id": f"c{n}-{i}"})
                    assert response.json["argument"] == [f"t{n}-{i}", 10]
                    assert response.correlation_id == f"c{n}-{i}"
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []


class TestApiGatewayEvents:
    routes = TOPOLOGY.service("profiles").routes

    def test_match_route(self) -> None:
        assert match_route(self.routes, "GET", "/users/u1/posts") == RouteMatch(
            Route("GET", "/users/{user_id}/posts"), {"user_id": "u1"})
        assert match_route(self.routes, "patch", "/users/a%2Fb") == RouteMatch(Route("PATCH", "/users/{user_id}"), {"user_id": "a/b"})
        assert match_route(self.routes, "DELETE", "/users/u1") == RouteMiss(405, ("GET", "PATCH"))
        assert match_route(self.routes, "GET", "/users") == RouteMiss(405, ("POST",))
        assert match_route(self.routes, "GET", "/posts") == RouteMiss(404)
        assert match_route(self.routes, "GET", "/users/u1/posts/x").error == "not_found"
        greedy = [Route("ANY", "/files/{path+}")]
        assert match_route(greedy, "PUT", "/files/a/b/c") == RouteMatch(Route("ANY", "/files/{path+}"), {"path": "a/b/c"})

    def test_rest_event_has_the_shape_aws_sends(self) -> None:
        event = rest_event(
            "get", "/users/u1/posts?limit=5&tag=a&tag=b", body={"x": 1},
            headers={"X-Correlation-Id": "c"}, routes=self.routes, stage="dev",
        )
        assert set(event) == {
            "resource", "path", "httpMethod", "headers", "multiValueHeaders", "queryStringParameters",
            "multiValueQueryStringParameters", "pathParameters", "stageVariables", "requestContext", "body",
            "isBase64Encoded",
        }
        assert event["httpMethod"] == "GET" and event["path"] == "/users/u1/posts"
        assert event["resource"] == "/users/{user_id}/posts" == event["requestContext"]["resourcePath"]
        assert event["pathParameters"] == {"user_id": "u1"}
        assert event["queryStringParameters"] == {"limit": "5", "tag": "b"}
        assert event["multiValueQueryStringParameters"] == {"limit": ["5"], "tag": ["a", "b"]}
        assert event["headers"]["Content-Type"] == "application/json"
        assert event["multiValueHeaders"]["X-Correlation-Id"] == ["c"]
        assert event["body"] == '{"x":1}' and event["isBase64Encoded"] is False
        context = event["requestContext"]
        assert context["stage"] == "dev" and context["path"] == "/dev/users/u1/posts"
        assert context["identity"]["sourceIp"] and isinstance(context["requestTimeEpoch"], int)
        assert context["requestId"] and context["httpMethod"] == "GET"

    def test_absent_maps_are_none_as_in_aws(self) -> None:
        event = rest_event("GET", "/users")
        assert event["queryStringParameters"] is None and event["multiValueQueryStringParameters"] is None
        assert event["pathParameters"] is None and event["stageVariables"] is None and event["body"] is None

    def test_a_body_that_is_not_utf8_is_base64(self) -> None:
        event = rest_event("POST", "/users", body=b"\xff\x00")
        assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == b"\xff\x00"

    def test_parse_proxy_result(self) -> None:
        status, headers, body = parse_proxy_result({
            "statusCode": 201,
            "headers": {"X-One": "1", "Content-Type": "text/plain"},
            "multiValueHeaders": {"content-type": ["application/json"], "Set-Cookie": ["a=1", "b=2"]},
            "body": base64.b64encode(b"{}").decode(),
            "isBase64Encoded": True,
        })
        assert (status, body) == (201, b"{}")
        assert headers["Content-Type"] == "application/json" and headers["x-one"] == "1"
        assert headers.get_all("set-cookie") == ["a=1", "b=2"]
        assert isinstance(headers, Headers) and len(headers) == 3
        with pytest.raises(ValueError):
            parse_proxy_result({"body": "x"})
