"""Property: no input a client can send yields a 5xx, a stack trace or a non-JSON answer
(docs/api.md "errors"). Hypothesis drives both APIs with arbitrary methods, paths built from the
real route templates with arbitrary segments, query strings, headers and bodies (JSON of any shape,
near-miss valid bodies, raw bytes), on the in-memory store."""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from escore.memory_store import InMemoryEventStore
from posts import api as posts_api
from profiles import api as profiles_api
from tests.support.api import ApiClient, routes_of
from tests.support.fakes import FakeProfiles, FakeTimeline

pytestmark = pytest.mark.unit

ENV = {"SERVICE_NAME": "x", "EVENT_STORE_TABLE": "unused"}


class FixedCounts:
    def count(self, tag: str) -> int:
        return 0


def clients() -> dict[str, ApiClient]:
    posts = posts_api.build({**ENV, "SERVICE_NAME": "posts"}, InMemoryEventStore(), hashtags=FixedCounts())
    profiles = profiles_api.build(
        {**ENV, "SERVICE_NAME": "profiles"}, InMemoryEventStore(), profiles=FakeProfiles(), timeline=FakeTimeline()
    )
    return {"posts": ApiClient(posts, routes_of("posts")), "profiles": ApiClient(profiles, routes_of("profiles"))}


CLIENTS = clients()
UUIDS = st.uuids().map(str)
SEGMENTS = st.one_of(UUIDS, st.text(min_size=0, max_size=40), st.sampled_from(["", "..", "%00", "a b", "ü", "#x"]))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["handle", "display_name", "author_id", "text", "expected_version", "extra"]
NEAR_MISS = st.dictionaries(
    st.sampled_from(FIELDS),
    st.one_of(UUIDS, st.text(max_size=2100), st.integers(-3, 2**70), st.none(), st.booleans(),
              st.sampled_from(["alice", "a" * 31, "ab", "x_1", "\ud800"])),
    max_size=4,
)
VALID = st.one_of(
    st.fixed_dictionaries({"handle": st.from_regex(r"\A[a-z0-9_]{3,30}\Z"), "display_name": st.text(min_size=1, max_size=100)}),
    st.fixed_dictionaries({"author_id": UUIDS, "text": st.text(min_size=1, max_size=300)}),
    st.fixed_dictionaries({"text": st.text(min_size=1, max_size=300), "expected_version": st.integers(-1, 3)}),
    st.fixed_dictionaries({"display_name": st.text(min_size=1, max_size=100)}, optional={"expected_version": st.integers(0, 3)}),
)
BODIES = st.one_of(
    st.none(),
    VALID.map(lambda v: json.dumps(v).encode()),
    VALID.map(lambda v: json.dumps(v).encode()),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    NEAR_MISS.map(lambda v: json.dumps(v).encode()),  # json escapes a lone surrogate; orjson refuses it
    st.binary(max_size=200),
    st.just(b"{" * 2000),
    st.integers(60_000, 70_000).map(lambda n: b'{"text": "' + b"x" * n + b'"}'),
)
CONTENT_TYPES = st.sampled_from(
    [None, "application/json", "application/json", "application/json", "application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded",
     "application/merge-patch+json", "", "APPLICATION/JSON"]
)
QUERIES = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["limit", "cursor", "expected_version", "x"]),
                    st.one_of(st.text(alphabet=string.printable, max_size=30), st.integers(-5, 10**20).map(str)),
                    max_size=3),
)


@st.composite
def requests(draw: Any) -> tuple[str, str, str]:
    service = draw(st.sampled_from(["posts", "profiles"]))
    routes = routes_of(service)
    if draw(st.integers(0, 9)) < 8:  # mostly a real route, with the method it takes and a UUID id
        route = draw(st.sampled_from(routes))
        resource, segment, method = route.resource, st.one_of(UUIDS, UUIDS, UUIDS, SEGMENTS), route.method
    else:
        resource = draw(st.sampled_from(["/", "/unknown/{x}", "/users/{a}/posts/{b}", *[r.resource for r in routes]]))
        segment = SEGMENTS
        method = draw(st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"]))
    parts = [draw(segment) if p.startswith("{") else p for p in resource.split("/")]
    return service, method, "/".join(parts) or "/"


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=requests(),
    body=BODIES,
    content_type=CONTENT_TYPES,
    query=QUERIES,
    idempotency_key=st.one_of(st.none(), st.text(max_size=300)),
    base64_body=st.booleans(),
)
def test_no_client_input_yields_a_5xx(target: tuple[str, str, str], body: bytes | None,
                                      content_type: str | None, query: dict[str, str] | None,
                                      idempotency_key: str | None, base64_body: bool) -> None:
    service, method, path = target
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if idempotency_key is not None and all(32 <= ord(c) < 127 for c in idempotency_key):
        headers["Idempotency-Key"] = idempotency_key
    # ApiClient checks every answer: JSON, X-Correlation-Id, {"error", "message"} on errors, no 5xx.
    response = CLIENTS[service].request(method, path, body=body, headers=headers, query=query,
                                        base64_body=base64_body)
    event(f"{method} -> {response.status}")
    assert response.status < 500
    if response.status >= 400:
        assert b"Traceback" not in response.body
