"""Fuzzing: every route of docs/openapi.json, driven by schemathesis against `eventstack local`.

Schemathesis generates requests from the document, both fitting it (positive) and breaking it
(negative: wrong types, missing fields, bad headers, ...), at `EXAMPLES` per route (half of the
cases on ids that exist, see `aim`), and every answer
must be what the API promises of all of them:

- no 5xx (a 503 `service_unavailable` is the one 5xx a client may see, when a dependency stalls;
  none should here, and any is reported);
- a JSON body, with an `{"error", "message"}` object on every error;
- no stack trace, and no AWS resource name (the runtime's tables, streams and bucket);
- `X-Correlation-Id` on the answer;
- and what schemathesis checks of the document itself: a documented status, content type, headers
  and body schema (so the document is the truth about the API).

EVENTSTACK_FUZZ_EXAMPLES overrides the number per route (e.g. 100 for a quick run).
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from eventstack.openapi import DOC_PATH
from tests.e2e.local_stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]

EXAMPLES = int(os.environ.get("EVENTSTACK_FUZZ_EXAMPLES", "1000"))
SCHEMA = schemathesis.openapi.from_dict(json.loads(DOC_PATH.read_text(encoding="utf-8")))
CHECKS = [status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
SENT: Counter[str] = Counter()
SERVICE_UNAVAILABLE: Counter[str] = Counter()
STATUSES: Counter[tuple[str, int]] = Counter()


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


@pytest.fixture(scope="module")
def resource_names(local_stack: LocalStack) -> list[str]:
    """Every AWS resource name of the runtime: none may appear in an answer."""
    status = local_stack.status()
    names = [*status["tables"].values(), *status["streams"].values(), status["archive_bucket"]]
    names += [m["dlq_url"].rsplit("/", 1)[-1] for m in status["mappings"] if m.get("dlq_url")]
    return sorted({str(name) for name in names if name})


@pytest.fixture(scope="module")
def known_ids(local_stack: LocalStack) -> dict[str, list[str]]:
    """A user and posts that exist, so the fuzzing reaches past "no such resource" (edits, deletes,
    version conflicts, deleted posts, a timeline with items) and not only 404s."""
    user = local_stack.call("POST", "/users", {"handle": "fuzz_author", "display_name": "Fuzz"})
    assert user.status == 201, user
    posts = [local_stack.call("POST", "/posts", {"author_id": user.body["user_id"], "text": f"#fuzz post {n}"})
             for n in range(5)]
    assert all(post.status == 201 for post in posts), posts
    return {"user_id": [user.body["user_id"]], "post_id": [post.body["post_id"] for post in posts]}


def aim(case: Any, known_ids: dict[str, list[str]]) -> None:
    """Half the cases (chosen by the generated value, so a case is the same on every run) get a real id."""
    for name, value in list((case.path_parameters or {}).items()):
        choice = zlib.crc32(repr(value).encode())
        if name in known_ids and choice % 2 == 0:
            ids = known_ids[name]
            case.path_parameters[name] = ids[(choice // 2) % len(ids)]


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    started = time.monotonic()
    yield
    print(f"\nfuzzing: {sum(SENT.values())} requests in {time.monotonic() - started:.0f} s: {dict(SENT)}")
    for route in SENT:
        print(f"  {route}: " + ", ".join(f"{status}: {n}" for (r, status), n in sorted(STATUSES.items()) if r == route))
    if SERVICE_UNAVAILABLE:
        print(f"503 service_unavailable answers: {dict(SERVICE_UNAVAILABLE)}")


def request_text(request: Any) -> str:
    """All the client sent (URL decoded, headers, body), as text."""
    body = request.body or b""
    body_text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    headers = " ".join(f"{name}: {value}" for name, value in request.headers.items())
    return " ".join([unquote(str(request.url)), str(request.url), headers, body_text])


def check_answer(response: Any, resource_names: list[str]) -> None:
    """What every answer promises, whatever the request."""
    where = f"{response.request.method} {response.request.url} -> {response.status_code}"
    headers = {name.lower(): values for name, values in response.headers.items()}  # name -> [values]
    assert headers.get("x-correlation-id"), where
    assert (headers.get("content-type") or [""])[0].startswith("application/json"), where
    text = response.text
    body = json.loads(text)  # JSON, or this fails the test
    assert "Traceback" not in text, where
    sent = request_text(response.request)
    for name in resource_names:
        # Hypothesis also generates strings it finds in the code (a table name as a post id, say):
        # the answer may echo what the client sent, never a name the client did not
        if name not in sent:
            assert name not in text, f"{where}: the answer names {name}"
    if response.status_code >= 400:
        assert isinstance(body, dict) and isinstance(body.get("error"), str), where
        assert isinstance(body.get("message"), str), where
    if response.status_code >= 500:
        assert response.status_code == 503 and body.get("error") == "service_unavailable", f"{where}: {text[:500]}"


@SCHEMA.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
def test_every_answer_keeps_the_promises(
    case: Any, local_stack: LocalStack, session: requests.Session, resource_names: list[str],
    known_ids: dict[str, list[str]],
) -> None:
    route = f"{case.operation.method.upper()} {case.operation.path}"
    aim(case, known_ids)
    response = case.call(base_url=local_stack.api, session=session, timeout=30)
    SENT[route] += 1
    STATUSES[route, response.status_code] += 1
    if response.status_code == 503:
        SERVICE_UNAVAILABLE[route] += 1
    check_answer(response, resource_names)
    case.validate_response(response, checks=CHECKS)


def test_every_route_was_fuzzed_enough() -> None:
    """Runs after the fuzzing (same module, in order): each route fuzzed got EXAMPLES requests or more."""
    if not SENT:
        pytest.skip("the fuzzing test did not run in this process")
    assert all(count >= EXAMPLES for count in SENT.values()), dict(SENT)
    assert not SERVICE_UNAVAILABLE, dict(SERVICE_UNAVAILABLE)


def test_the_document_has_every_route() -> None:
    """So the parametrized test fuzzes every route the topology deploys, and nothing else."""
    from eventstack.topology import TOPOLOGY

    documented = {(method.upper(), path) for path, item in SCHEMA.raw_schema["paths"].items() for method in item}
    deployed = {(route.method, route.resource) for service in TOPOLOGY.services for route in service.routes}
    assert documented == deployed
