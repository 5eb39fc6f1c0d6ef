"""Concurrency through HTTP on the local runtime (issue 9, "Proof"): 50 clients at once on one
aggregate, on one handle, and on one idempotency key. The exact outcomes are asserted, and after a
drain the projections agree with the event stores."""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.e2e.local_stack import Answer, LocalStack

pytestmark = pytest.mark.e2e

CLIENTS = 50


def at_once(stack: LocalStack, calls: list[tuple[str, str, Any, dict[str, str]]]) -> list[Answer]:
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda c: stack.call(c[0], c[1], c[2], headers=c[3], timeout=120), calls))


def assert_well_formed(answers: list[Answer]) -> None:
    for answer in answers:
        assert answer.status < 500, answer
        assert isinstance(answer.body, dict), answer
        assert answer.headers.get("x-correlation-id"), answer


def test_fifty_edits_of_one_post_at_one_expected_version_have_one_winner(local_stack: LocalStack) -> None:
    stack = local_stack
    user = stack.call("POST", "/users", {"handle": f"c{uuid.uuid4().hex[:12]}", "display_name": "C"}).body["user_id"]
    post = stack.call("POST", "/posts", {"author_id": user, "text": "v1"}).body["post_id"]
    answers = at_once(stack, [("PATCH", f"/posts/{post}", {"text": f"edit {n} #race", "expected_version": 1}, {})
                              for n in range(CLIENTS)])
    assert_well_formed(answers)
    assert Counter(a.status for a in answers) == {200: 1, 409: CLIENTS - 1}
    assert all(a.error == "conflict" and a.body["current_version"] == 2 for a in answers if a.status == 409)
    winner = next(a for a in answers if a.status == 200)
    assert winner.body == {"post_id": post, "version": 2}
    stored = [e for e in stack.event_store("posts") if e["stream_id"] == f"post-{post}"]
    assert [e["version"] for e in sorted(stored, key=lambda e: e["version"])] == [1, 2]
    stack.drain()
    text = stack.call("GET", f"/posts/{post}").body["text"]
    assert text.startswith("edit ") and text.endswith("#race")
    assert stack.call("GET", "/tags/race").body["post_count"] == 1
    items = stack.call("GET", f"/users/{user}/posts?limit=10").body["items"]
    assert [(i["post_id"], i["text"]) for i in items] == [(post, text)]
    assert stack.call("GET", f"/users/{user}").body["post_count"] == 1


def test_fifty_registrations_of_one_handle_have_one_winner(local_stack: LocalStack) -> None:
    stack = local_stack
    handle = f"h{uuid.uuid4().hex[:12]}"
    answers = at_once(stack, [("POST", "/users", {"handle": handle, "display_name": f"N{n}"}, {})
                              for n in range(CLIENTS)])
    assert_well_formed(answers)
    assert Counter(a.status for a in answers) == {201: 1, 409: CLIENTS - 1}
    assert all(a.error == "handle_taken" for a in answers if a.status == 409)
    user = next(a for a in answers if a.status == 201).body["user_id"]
    registered = [e for e in stack.event_store("profiles")
                  if e["type"] == "UserRegistered" and e["data"]["handle"] == handle]
    assert [e["data"]["user_id"] for e in registered] == [user]
    stack.drain()
    assert stack.call("GET", f"/users/{user}").body["handle"] == handle


def test_fifty_retries_of_one_idempotency_key_append_once(local_stack: LocalStack) -> None:
    stack = local_stack
    user = stack.call("POST", "/users", {"handle": f"i{uuid.uuid4().hex[:12]}", "display_name": "I"}).body["user_id"]
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    body = {"author_id": user, "text": "exactly once"}
    answers = at_once(stack, [("POST", "/posts", body, key) for _ in range(CLIENTS)])
    assert_well_formed(answers)
    created = [a for a in answers if a.status == 201]
    # One request does the work; the others either get its stored answer or, while it still
    # runs, 409 idempotency_in_progress (and nothing else).
    assert created and len({a.body["post_id"] for a in created}) == 1
    assert all(a.status == 201 or a.error == "idempotency_in_progress" for a in answers), Counter(
        (a.status, a.error) for a in answers)
    post = created[0].body["post_id"]
    again = stack.call("POST", "/posts", body, headers=key)
    assert (again.status, again.body) == (201, created[0].body)
    assert again.headers.get("idempotent-replayed") == "true"
    mine = [e for e in stack.event_store("posts")
            if e["type"] == "PostCreated" and e["data"]["author_id"] == user]
    assert [e["data"]["post_id"] for e in mine] == [post]
    stack.drain()
    assert stack.call("GET", f"/users/{user}").body["post_count"] == 1
