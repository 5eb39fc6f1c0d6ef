"""The OpenAPI document: docs/openapi.json is what the API code generates (Powertools, through
escore.http.JsonApi.openapi and eventstack.openapi), and it says what docs/api.md promises."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import BaseModel

from escore.http import JsonApi
from eventstack.openapi import DOC_PATH, document, document_text
from eventstack.topology import TOPOLOGY, Route
from tests.support.api import ApiClient, expect_error

pytestmark = pytest.mark.unit


def operations() -> dict[tuple[str, str], dict[str, object]]:
    return {(method.upper(), path): operation
            for path, item in document()["paths"].items() for method, operation in item.items()}


def test_the_committed_document_is_what_the_code_generates() -> None:
    assert DOC_PATH.read_text(encoding="utf-8") == document_text(), (
        "docs/openapi.json is stale: run `python -m eventstack.openapi --write`")


def test_every_deployed_route_is_documented_and_nothing_else() -> None:
    deployed = {(route.method, route.resource) for service in TOPOLOGY.services for route in service.routes}
    assert set(operations()) == deployed


def test_every_operation_documents_its_answers() -> None:
    for (method, path), operation in operations().items():
        responses: dict[str, dict[str, object]] = operation["responses"]  # type: ignore[assignment]
        success = "201" if (method, path) in {("POST", "/posts"), ("POST", "/users")} else "200"
        expected = {success, "404", "405", "422", "503"}
        if method in {"POST", "PATCH"}:
            expected |= {"400", "413"}
        if method in {"POST", "PATCH", "DELETE"}:
            expected.add("409")
        assert set(responses) == expected, (method, path)
        for status, response in responses.items():
            assert "X-Correlation-Id" in response["headers"], (method, path, status)  # type: ignore[operator]
            schema = response["content"]["application/json"]["schema"]  # type: ignore[index]
            assert "$ref" in schema, (method, path, status)  # a model, never a bare object
        names = {p["name"] for p in operation["parameters"]}  # type: ignore[attr-defined]
        assert "X-Correlation-Id" in names
        assert ("Idempotency-Key" in names) == (method != "GET"), (method, path)


def test_the_error_shapes_and_the_rules_are_in_the_document() -> None:
    schemas = document()["components"]["schemas"]
    assert schemas["ErrorAnswer"]["required"] == ["error", "message"]
    assert "current_version" in schemas["ConflictAnswer"]["properties"]
    assert "detail" in schemas["ValidationErrorAnswer"]["required"]
    assert schemas["RegisterUser"]["properties"]["handle"]["pattern"] == r"^[a-z0-9_]{3,30}$"
    assert schemas["RegisterUser"]["additionalProperties"] is False
    assert schemas["CreatePost"]["properties"]["author_id"]["format"] == "uuid"
    timeline = operations()[("GET", "/users/{user_id}/posts")]
    query = {p["name"]: p for p in timeline["parameters"] if p["in"] == "query"}  # type: ignore[attr-defined]
    assert set(query) == {"limit", "cursor"}
    assert (query["limit"]["schema"]["minimum"], query["limit"]["schema"]["maximum"]) == (1, 100)


def test_docs_api_md_names_every_route_and_code() -> None:
    text = (DOC_PATH.parent / "api.md").read_text(encoding="utf-8")
    for method, path in operations():
        assert f"{method} {path}" in text, (method, path)
    for code in ["bad_request", "not_found", "method_not_allowed", "conflict", "handle_taken", "payload_too_large",
                 "validation_error", "service_unavailable", "idempotency_key_reused", "idempotency_in_progress"]:
        assert f"`{code}`" in text, code
    assert "^[a-z0-9_]{3,30}$" in text
    assert "CONTRACT" not in text
    json.loads(DOC_PATH.read_text(encoding="utf-8"))


class Answer(BaseModel):
    n: int


def test_an_answer_that_breaks_its_return_model_is_a_500_not_a_422() -> None:
    """Powertools reports a return value that fails the route's model as a RequestValidationError:
    that is the API's fault, never the client's (a 422 would blame the request)."""
    api = JsonApi("toy")

    @api.get("/broken")
    def broken() -> Answer:
        return {"n": "not a number"}  # type: ignore[return-value]

    client = ApiClient(api, [Route("GET", "/broken")])
    response = client.get("/broken", allow_5xx=True)
    body = expect_error(response, 500, "internal_error")
    assert "detail" not in body and "not a number" not in response.body.decode()
    assert re.fullmatch(r"[0-9a-f-]{36}", response.correlation_id)
