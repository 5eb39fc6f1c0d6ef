"""The local web UI's routes (eventstack.local.ui_api) on an in-process local runtime: the page and its
files with their content types, every other path under /_local/ui a 404 JSON answer (traversals
included), bad input a 4xx JSON answer and never a 5xx, and the JSON the page reads (overview, archive,
trace) agreeing with the stores and the bucket after real requests."""

from __future__ import annotations

import http.client
import json
import random
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from eventstack.local.runtime import LocalConfig, LocalRuntime
from eventstack.topology import TOPOLOGY

pytestmark = pytest.mark.integration

SOURCE_MARKERS = (b"import ", b"def ", b"root:", b"[project]")  # what a leaked file would hold


@pytest.fixture(scope="module")
def runtime() -> Iterator[LocalRuntime]:
    started = LocalRuntime(LocalConfig(port=0, aws_port=0, firehose_interval=1))
    started.start()
    yield started
    started.stop(drain_timeout=0)


def call(runtime: LocalRuntime, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    """One request with `path` sent exactly as written (http.client does not normalise it)."""
    address = urlsplit(runtime.api_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        all_headers = {"content-type": "application/json"} if data else {}
        connection.request(method, path, body=data, headers={**all_headers, **(headers or {})})
        answer = connection.getresponse()
        return answer.status, answer.read(), {k.lower(): v for k, v in answer.getheaders()}
    finally:
        connection.close()


def get_json(runtime: LocalRuntime, path: str) -> tuple[int, Any, dict[str, str]]:
    status, body, headers = call(runtime, "GET", path)
    assert headers["content-type"] == "application/json", (path, status, body[:200])
    return status, json.loads(body), headers


# -- the page and its files -------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "content_type", "marker"), [
    ("/_local/ui", "text/html; charset=utf-8", b'<script type="module" src="/_local/ui/app.js">'),
    ("/_local/ui/", "text/html; charset=utf-8", b"<title>eventstack local</title>"),
    ("/_local/ui/index.html", "text/html; charset=utf-8", b'href="/_local/ui/style.css"'),
    ("/_local/ui/app.js", "text/javascript; charset=utf-8", b'const API = "/_local/ui/api";'),
    ("/_local/ui/style.css", "text/css; charset=utf-8", b".timeline"),
])
def test_the_page_and_its_files_are_served_with_their_content_types(runtime: LocalRuntime, path: str,
                                                                    content_type: str, marker: bytes) -> None:
    status, body, headers = call(runtime, "GET", path)
    assert status == 200
    assert headers["content-type"] == content_type
    assert marker in body
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers.get("x-correlation-id")
    head_status, head_body, _ = call(runtime, "HEAD", path)
    assert head_status == 200 and head_body == b""


@pytest.mark.parametrize("path", [
    "/_local/ui/nope.js",
    "/_local/ui/favicon.ico",
    "/_local/ui/app.js/",
    "/_local/ui/ui/app.js",
    "/_local/ui/../ui_api.py",
    "/_local/ui/../../../pyproject.toml",
    "/_local/ui/%2e%2e/ui_api.py",
    "/_local/ui/..%2fui_api.py",
    "/_local/ui/%2e%2e%2f%2e%2e%2fserver.py",
    "/_local/ui/..%5cui_api.py",
    "/_local/ui//etc/passwd",
    "/_local/ui/%2fetc%2fpasswd",
    "/_local/ui/app.js%00.html",
    "/_local/uix",
])
def test_any_other_path_is_a_404_json_answer_and_never_a_file(runtime: LocalRuntime, path: str) -> None:
    status, body, headers = call(runtime, "GET", path)
    assert status == 404, (path, body)
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == "not_found"
    assert not any(marker in body for marker in SOURCE_MARKERS)
    assert headers.get("x-correlation-id")


def test_only_get_and_head_are_allowed(runtime: LocalRuntime) -> None:
    for method, path in [("POST", "/_local/ui"), ("DELETE", "/_local/ui/app.js"), ("PUT", "/_local/ui/api/overview")]:
        status, body, headers = call(runtime, method, path, body={})
        assert status == 405, (method, path)
        assert json.loads(body)["error"] == "method_not_allowed"
        assert headers["allow"] == "GET, HEAD"


# -- bad input: 4xx JSON, never 5xx ---------------------------------------------------------------
@pytest.mark.parametrize(("path", "status"), [
    ("/_local/ui/api/nope", 404),
    ("/_local/ui/api/", 404),
    ("/_local/ui/api/trace", 400),
    ("/_local/ui/api/trace/", 400),
    ("/_local/ui/api/trace/%00abc", 400),
    ("/_local/ui/api/trace/a%0Ab", 400),
    ("/_local/ui/api/trace/%C3%A9t%C3%A9", 400),
    ("/_local/ui/api/trace/%20leading", 400),
    ("/_local/ui/api/trace/trailing%20", 400),
    ("/_local/ui/api/trace/%FF%FE", 400),
    ("/_local/ui/api/trace/" + "x" * 201, 400),
    ("/_local/ui/api/overview?limit=0", 422),
    ("/_local/ui/api/overview?limit=201", 422),
    ("/_local/ui/api/overview?limit=abc", 422),
    ("/_local/ui/api/overview?limit=", 422),
    ("/_local/ui/api/overview?limit=1.5", 422),
])
def test_bad_input_is_a_4xx_json_error(runtime: LocalRuntime, path: str, status: int) -> None:
    got, body, headers = get_json(runtime, path)
    assert got == status, (path, body)
    assert body["error"] in ("not_found", "validation_error") and body["message"]
    assert headers.get("x-correlation-id")


def test_no_correlation_id_gets_a_5xx(runtime: LocalRuntime) -> None:
    rng = random.Random(11)
    alphabet = [chr(c) for c in range(0, 0x80)] + ["é", "☃", "\u2028", "/", "%", "?", "#"]
    for _ in range(60):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 220)))
        status, body, _ = call(runtime, "GET", "/_local/ui/api/trace/" + quote(text, safe=""))
        assert status < 500, (text, body)
        assert status in (200, 400, 404), (text, status, body)


# -- the JSON, after real requests -------------------------------------------------------------------
@pytest.fixture(scope="module")
def traffic(runtime: LocalRuntime) -> dict[str, Any]:
    """A user registered, then a post created and edited, all under one correlation id (with a slash,
    as the API allows), and a second request under another id; drained, so Firehose has archived them."""
    correlation = f"ui-test/{uuid.uuid4().hex[:10]}"
    other = f"ui-other-{uuid.uuid4().hex[:10]}"
    mine = {"X-Correlation-Id": correlation}
    status, body, _ = call(runtime, "POST", "/users", {"handle": "u_" + uuid.uuid4().hex[:10], "display_name": "Ada"},
                           headers=mine)
    assert status == 201, body
    user = json.loads(body)["user_id"]
    status, body, _ = call(runtime, "POST", "/posts", {"author_id": user, "text": "hello #ui"}, headers=mine)
    assert status == 201, body
    post = json.loads(body)["post_id"]
    status, body, _ = call(runtime, "PATCH", f"/posts/{post}", {"text": "hello again #ui", "expected_version": 1},
                           headers=mine)
    assert status == 200, body
    status, body, _ = call(runtime, "POST", "/posts", {"author_id": user, "text": "another"},
                           headers={"X-Correlation-Id": other})
    assert status == 201, body
    drained, _ = runtime.drain(60)
    assert drained
    return {"correlation_id": correlation, "other": other, "user": user, "post": post}


def test_the_overview_lists_every_service_with_its_names_and_latest_events(runtime: LocalRuntime,
                                                                          traffic: dict[str, Any]) -> None:
    status, body, _ = get_json(runtime, "/_local/ui/api/overview")
    assert status == 200
    services = {s["name"]: s for s in body["services"]}
    assert list(services) == [s.name for s in TOPOLOGY.services]  # every service, in the topology's order
    names = runtime.status()
    for name, service in services.items():
        assert service["event_store"] == names["tables"][f"{name}_events"]
        assert service["stream"] == names["streams"][name]
        assert service["truncated"] is False
    assert [p["name"] for p in services["profiles"]["projections"]] == ["user_profiles", "user_timeline"]
    posts = services["posts"]["latest"]
    assert services["posts"]["events"] == 3
    assert [(e["type"], e["stream_id"], e["version"]) for e in posts[-2:]] == [
        ("PostEdited", f"post-{traffic['post']}", 2), ("PostCreated", f"post-{traffic['post']}", 1)]
    assert posts[0]["correlation_id"] == traffic["other"]  # newest first
    assert [e["occurred_at"] for e in posts] == sorted((e["occurred_at"] for e in posts), reverse=True)
    profiles = services["profiles"]["latest"]
    assert [(e["type"], e["correlation_id"]) for e in profiles] == [("UserRegistered", traffic["correlation_id"])]
    assert all(e["causation_id"] for e in posts + profiles)

    status, limited, _ = get_json(runtime, "/_local/ui/api/overview?limit=1")
    assert status == 200
    counts = {s["name"]: (len(s["latest"]), s["events"]) for s in limited["services"]}
    assert counts["posts"] == (1, 3) and counts["profiles"] == (1, 1)


def test_the_archive_lists_the_buckets_objects(runtime: LocalRuntime, traffic: dict[str, Any]) -> None:
    status, body, _ = get_json(runtime, "/_local/ui/api/archive")
    assert status == 200
    s3 = runtime.emulation.client("s3")
    listed = {o["Key"]: o for o in s3.list_objects_v2(Bucket=body["bucket"]).get("Contents", [])}
    assert body["bucket"] == runtime.status()["archive_bucket"]
    assert body["count"] == len(listed) == len(body["objects"]) >= 2
    assert body["bytes"] == sum(o["Size"] for o in listed.values())
    for obj in body["objects"]:
        assert obj["size"] == listed[obj["key"]]["Size"]
        assert obj["key"].startswith(f"events/service={obj['service']}/year=")
        hour = obj["hour"]  # e.g. 2026-12-01T21:00Z, the key's delivery hour
        assert f"/year={hour[:4]}/month={hour[5:7]}/day={hour[8:10]}/hour={hour[11:13]}/" in obj["key"]
        assert obj["last_modified"].endswith("Z") and obj["kind"] == "events"
    assert {o["service"] for o in body["objects"]} >= {"posts", "profiles"}
    assert [o["last_modified"] for o in body["objects"]] == sorted((o["last_modified"] for o in body["objects"]),
                                                                   reverse=True)


def test_the_trace_is_every_event_of_the_request_across_services_in_order(runtime: LocalRuntime,
                                                                         traffic: dict[str, Any]) -> None:
    correlation = traffic["correlation_id"]
    status, body, _ = get_json(runtime, "/_local/ui/api/trace/" + quote(correlation, safe=""))
    assert status == 200, body
    assert body["correlation_id"] == correlation
    # the request's own events (a service that reacts to them may add events of its own)
    entries = [e for e in body["entries"] if e["service"] in ("posts", "profiles")]
    assert [(e["service"], e["type"], e["version"]) for e in entries] == [
        ("profiles", "UserRegistered", 1), ("posts", "PostCreated", 1), ("posts", "PostEdited", 2)]
    assert [e["occurred_at"] for e in entries] == sorted(e["occurred_at"] for e in entries)
    assert body["archive_searched"] is True and body["archive_error"] is None
    assert all(e["source"] == "both" and e["archived_at"] for e in entries)  # drained: archived and stored
    assert entries[1]["data"]["text"] == "hello #ui" and entries[2]["data"]["text"] == "hello again #ui"
    assert body["stats"]["both"] >= 3

    status, unknown, _ = get_json(runtime, "/_local/ui/api/trace/no-such-request")
    assert status == 200 and unknown["entries"] == []
