"""The whole stack over HTTP, against `eventstack local` started as a user starts it (docs/api.md: "The archive", "The local runtime's routes")."""

from __future__ import annotations

import random
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.local_stack import LocalStack

pytestmark = pytest.mark.e2e

# The shared contract smoke script lies beside the checkout (../shared), in CI as on a workstation.
SMOKE = next(
    (p for p in (Path(__file__).resolve().parents[3] / "shared" / "contract_smoke.py",
                 Path("/work/shared/contract_smoke.py")) if p.exists()),
    Path("/work/shared/contract_smoke.py"),
)


def handle() -> str:
    return "u_" + uuid.uuid4().hex[:12]


def register(stack: LocalStack, name: str = "Someone") -> str:
    answer = stack.call("POST", "/users", {"handle": handle(), "display_name": name})
    assert answer.status == 201, answer
    return str(answer.body["user_id"])


def create_post(stack: LocalStack, author: str, text: str) -> str:
    answer = stack.call("POST", "/posts", {"author_id": author, "text": text})
    assert answer.status == 201, answer
    assert answer.body["version"] == 1
    return str(answer.body["post_id"])


def fold(events: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, list[tuple[str, str, str]]]]:
    """post_count per author and live posts per author (newest first), from the unique posts events."""
    posts: dict[str, dict[str, Any]] = {}
    unique = {e["event_id"]: e for e in events}.values()
    for event in sorted(unique, key=lambda e: (e["stream_id"], e["version"])):
        post_id = event["stream_id"].removeprefix("post-")
        if event["type"] == "PostCreated":
            posts[post_id] = {"author": event["data"]["author_id"], "text": event["data"]["text"],
                              "created_at": event["occurred_at"], "live": True}
        elif event["type"] == "PostEdited" and post_id in posts:
            posts[post_id]["text"] = event["data"]["text"]
        elif event["type"] == "PostDeleted" and post_id in posts:
            posts[post_id]["live"] = False
    counts: dict[str, int] = Counter()
    timelines: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for post_id, post in posts.items():
        if post["live"]:
            counts[post["author"]] += 1
            timelines[post["author"]].append((post["created_at"], post_id, post["text"]))
    for items in timelines.values():
        items.sort(reverse=True)
    return dict(counts), dict(timelines)


def read_timeline(stack: LocalStack, user_id: str) -> list[tuple[str, str, str]]:
    items: list[tuple[str, str, str]] = []
    cursor = ""
    while True:
        answer = stack.call("GET", f"/users/{user_id}/posts?limit=7&cursor={cursor}")
        assert answer.status == 200, answer
        items += [(i["created_at"], i["post_id"], i["text"]) for i in answer.body["items"]]
        cursor = answer.body["next_cursor"]
        if not cursor:
            return items


def assert_projections_match_the_fold(stack: LocalStack, users: list[str]) -> None:
    counts, timelines = fold(stack.event_store("posts"))
    for user in users:
        profile = stack.call("GET", f"/users/{user}")
        assert profile.status == 200, profile
        assert profile.body["post_count"] == counts.get(user, 0), user
        assert read_timeline(stack, user) == timelines.get(user, []), user


def assert_archive_holds_every_event_once(stack: LocalStack) -> None:
    stored = {e["event_id"]: e for service in ("posts", "profiles") for e in stack.event_store(service)}
    archived = stack.archive()
    by_id: dict[str, dict[str, Any]] = {}
    for event in archived:
        assert by_id.setdefault(event["event_id"], event) == event  # duplicates are exact copies
    assert by_id.keys() == stored.keys()
    assert all(by_id[k] == stored[k] for k in stored)
    for key in stack.archive_keys():
        if key.startswith("events/"):
            service = key.split("/")[1].removeprefix("service=")
            assert service in ("posts", "profiles")
            assert key.endswith(".gz") and "/year=" in key and "/hour=" in key


# -- the happy path and the projections ------------------------------------------------------
def test_users_and_posts_end_in_the_projections(local_stack: LocalStack) -> None:
    stack = local_stack
    alice, bob = register(stack, "Alice"), register(stack, "Bob")
    alice_posts = [create_post(stack, alice, f"alice {i}") for i in range(4)]
    bob_post = create_post(stack, bob, "bob 0")

    edited = stack.call("PATCH", f"/posts/{alice_posts[1]}", {"text": "alice 1, edited", "expected_version": 1})
    assert edited.status == 200 and edited.body["version"] == 2
    deleted = stack.call("DELETE", f"/posts/{alice_posts[2]}?expected_version=1")
    assert deleted.status == 200 and deleted.body["version"] == 2
    renamed = stack.call("PATCH", f"/users/{bob}", {"display_name": "Robert", "expected_version": 1})
    assert renamed.status == 200 and renamed.body["version"] == 2

    status = stack.drain()
    assert all(m["pending"] == 0 for m in status["mappings"])

    profile = stack.call("GET", f"/users/{alice}")
    assert profile.status == 200
    assert profile.body["post_count"] == 3
    assert profile.body["version"] == 1
    timeline = stack.call("GET", f"/users/{alice}/posts?limit=10").body
    assert [i["post_id"] for i in timeline["items"]] == [alice_posts[3], alice_posts[1], alice_posts[0]]
    assert timeline["items"][1]["text"] == "alice 1, edited"
    assert timeline["next_cursor"] is None
    bob_profile = stack.call("GET", f"/users/{bob}").body
    assert bob_profile["display_name"] == "Robert" and bob_profile["post_count"] == 1
    post = stack.call("GET", f"/posts/{bob_post}")
    assert post.status == 200 and post.body["author_id"] == bob and post.body["text"] == "bob 0"
    assert stack.call("GET", f"/posts/{alice_posts[2]}").status == 404
    assert_projections_match_the_fold(stack, [alice, bob])


def test_a_taken_handle_is_409(local_stack: LocalStack) -> None:
    name = handle()
    assert local_stack.call("POST", "/users", {"handle": name, "display_name": "A"}).status == 201
    again = local_stack.call("POST", "/users", {"handle": name, "display_name": "B"})
    assert again.status == 409 and again.error == "handle_taken"


def test_a_stale_expected_version_is_409(local_stack: LocalStack) -> None:
    user = register(local_stack)
    post = create_post(local_stack, user, "v1")
    assert local_stack.call("PATCH", f"/posts/{post}", {"text": "v2", "expected_version": 1}).status == 200
    stale = local_stack.call("PATCH", f"/posts/{post}", {"text": "v3", "expected_version": 1})
    assert stale.status == 409 and stale.error == "conflict" and stale.body["current_version"] == 2
    stale_delete = local_stack.call("DELETE", f"/posts/{post}?expected_version=1")
    assert stale_delete.status == 409


def test_an_idempotent_retry_answers_the_same_and_appends_nothing(local_stack: LocalStack) -> None:
    user = register(local_stack)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = local_stack.call("POST", "/posts", {"author_id": user, "text": "once"}, headers=key)
    again = local_stack.call("POST", "/posts", {"author_id": user, "text": "once"}, headers=key)
    assert first.status == again.status == 201
    assert first.body == again.body
    reused = local_stack.call("POST", "/posts", {"author_id": user, "text": "other"}, headers=key)
    assert reused.status == 409 and reused.error == "idempotency_key_reused"
    local_stack.drain()
    created = [e for e in local_stack.event_store("posts")
               if e["type"] == "PostCreated" and e["data"]["author_id"] == user]
    assert len(created) == 1
    assert local_stack.call("GET", f"/users/{user}").body["post_count"] == 1


def test_unknown_routes_and_methods_answer_json_like_the_contract(local_stack: LocalStack) -> None:
    missing = local_stack.call("GET", "/nope")
    assert missing.status == 404 and missing.error == "not_found" and "x-correlation-id" in missing.headers
    wrong = local_stack.call("PUT", "/posts/abc", {"text": "x"})
    assert wrong.status == 405 and wrong.error == "method_not_allowed"
    assert "PATCH" in wrong.headers["allow"] and "x-correlation-id" in wrong.headers
    given = local_stack.call("GET", f"/posts/{uuid.uuid4()}", headers={"X-Correlation-Id": "trace-me-123"})
    assert given.status == 404 and given.headers["x-correlation-id"] == "trace-me-123"


def test_status_names_the_resources_and_every_mapping(local_stack: LocalStack) -> None:
    from eventstack.topology import TOPOLOGY

    status = local_stack.status()
    assert status["aws_endpoint_url"] == local_stack.aws
    assert status["archive_bucket"]
    tables = {s.event_store.logical_name for s in TOPOLOGY.services} | {p.name for _, p in TOPOLOGY.projections}
    assert set(status["tables"]) == tables
    assert status["streams"] == {s.name: s.stream_logical_name for s in TOPOLOGY.services}
    sources = {(m["source"], m["function"]) for m in status["mappings"]}
    expected = {(f"dynamodb:{s.event_store.logical_name}", s.publisher_function_name) for s in TOPOLOGY.services}
    expected |= {(f"kinesis:{TOPOLOGY.service(sub.source).stream_logical_name}", sub.projection.function_name)
                 for sub in TOPOLOGY.subscriptions}
    assert sources == expected
    assert ("dynamodb:posts_events", "posts-publisher") in sources
    assert ("kinesis:posts-events", "user_timeline-projector") in sources
    assert all(isinstance(m["pending"], int) and isinstance(m["dlq"], int) for m in status["mappings"])


# -- the archive ------------------------------------------------------------------------------
def test_the_archive_holds_every_event_exactly_once_after_deduplication(local_stack: LocalStack) -> None:
    user = register(local_stack)
    for i in range(5):
        create_post(local_stack, user, f"archived {i}")
    local_stack.drain()
    assert_archive_holds_every_event_once(local_stack)


# -- a poison record ---------------------------------------------------------------------------
def test_a_poison_record_ends_in_the_dlq_without_holding_back_the_records_behind_it(local_stack: LocalStack) -> None:
    stack = local_stack
    user = register(stack)
    stack.drain()
    before = {m["name"]: m["dlq"] for m in stack.status()["mappings"]}
    stream = stack.status()["streams"]["posts"]
    stack.client("kinesis").put_record(StreamName=stream, Data=b"this is not an envelope\n", PartitionKey="poison")
    posts = [create_post(stack, user, f"behind the poison {i}") for i in range(3)]
    started = time.monotonic()
    status = stack.drain(timeout=60)
    after = {m["name"]: m for m in status["mappings"]}
    posts_consumers = [m["name"] for m in status["mappings"] if m["source"] == "kinesis:posts-events"]
    assert {"user_profiles-from-posts", "user_timeline-from-posts"} <= set(posts_consumers)
    for name in posts_consumers:
        assert after[name]["dlq"] == before[name] + 1, after[name]
    assert stack.call("GET", f"/users/{user}").body["post_count"] == 3
    items = stack.call("GET", f"/users/{user}/posts?limit=10").body["items"]
    assert [i["post_id"] for i in items] == posts[::-1]
    assert time.monotonic() - started < 30
    message = stack.client("sqs").receive_message(QueueUrl=after["user_timeline-from-posts"]["dlq_url"],
                                                  MaxNumberOfMessages=10)["Messages"]
    assert any('"KinesisBatchInfo"' in m["Body"] and '"RetryAttemptsExhausted"' in m["Body"] for m in message)
    errors = stack.archive(prefix="errors/")
    assert any(e.get("errorCode", "").startswith("DynamicPartitioning") for e in errors)


# -- drain -------------------------------------------------------------------------------------
def test_drain_answers_504_when_the_timeout_passes_first(local_stack: LocalStack) -> None:
    user = register(local_stack)
    create_post(local_stack, user, "in flight")
    answer = local_stack.call("POST", "/_local/drain?timeout=0")
    assert answer.status == 504
    assert answer.error == "drain_timeout" and "mappings" in answer.body["status"]
    bad = local_stack.call("POST", "/_local/drain?timeout=abc")
    assert bad.status == 422
    local_stack.drain()


def test_drain_is_quick_when_idle(local_stack: LocalStack) -> None:
    local_stack.drain()
    started = time.monotonic()
    local_stack.drain()
    assert time.monotonic() - started < 2.0


# -- the contract's own smoke test -------------------------------------------------------------
@pytest.mark.skipif(not SMOKE.exists(), reason="the shared contract smoke script is not on this machine")
def test_the_contract_smoke_script_passes(local_stack: LocalStack) -> None:
    done = subprocess.run([sys.executable, str(SMOKE), local_stack.api], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "contract smoke: ok" in done.stdout


# -- a port already taken ----------------------------------------------------------------------
def test_a_taken_port_is_one_clear_line_and_exit_2(local_stack: LocalStack) -> None:
    port = local_stack.api.rsplit(":", 1)[1]
    done = subprocess.run([sys.executable, "-m", "eventstack", "local", "--port", port, "--aws-port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "in use" in lines[0] and port in lines[0], lines


# -- faults ------------------------------------------------------------------------------------
def test_with_faults_the_projections_still_equal_the_fold_of_the_unique_events(faulty_stack: LocalStack) -> None:
    stack = faulty_stack
    rng = random.Random(11)
    users = [register(stack, f"user {i}") for i in range(4)]
    posts: dict[str, int] = {}
    for i in range(40):
        post = create_post(stack, rng.choice(users), f"post {i}")
        posts[post] = 1
        if i % 4 == 0:  # a user's first posts may be projected before they exist, and the other way round
            users.append(register(stack, f"late {i}"))
    for post in rng.sample(sorted(posts), 12):
        answer = stack.call("PATCH", f"/posts/{post}", {"text": "edited", "expected_version": posts[post]})
        assert answer.status == 200
        posts[post] += 1
    for post in rng.sample(sorted(posts), 10):
        assert stack.call("DELETE", f"/posts/{post}").status == 200
    status = stack.drain(timeout=90)
    assert status["faults"]["duplicated_batches"] > 0 and status["faults"]["crashed_invocations"] > 0
    assert all(m["dlq"] == 0 for m in status["mappings"])
    assert_projections_match_the_fold(stack, users)
    archived = stack.archive()
    assert len(archived) >= len({e["event_id"] for e in archived})
    assert_archive_holds_every_event_once(stack)
