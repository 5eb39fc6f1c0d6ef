"""The running local API serves the OpenAPI document at GET /openapi.json: docs/openapi.json, as committed."""

from __future__ import annotations

import json

import pytest

from eventstack.openapi import DOC_PATH
from tests.e2e.local_stack import LocalStack

pytestmark = pytest.mark.e2e


def test_the_local_api_serves_the_committed_document(local_stack: LocalStack) -> None:
    answer = local_stack.call("GET", "/openapi.json", headers={"X-Correlation-Id": "doc-1"})
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["x-correlation-id"] == "doc-1"
    assert answer.body == json.loads(DOC_PATH.read_text(encoding="utf-8"))


def test_openapi_json_is_read_only(local_stack: LocalStack) -> None:
    answer = local_stack.call("POST", "/openapi.json", body={})
    assert (answer.status, answer.error, answer.headers["allow"]) == (405, "method_not_allowed", "GET")
    assert answer.headers["x-correlation-id"]
