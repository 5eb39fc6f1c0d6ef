"""`eventstack local` with the notifications service: a post mentioning a user shows once in
`GET /users/{id}/notifications` and as one line of the runtime's log, also when every other Kinesis
delivery comes twice (`--fault-duplicates 0.5`)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.local_stack import LocalStack, start_local

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=[(), ("--fault-duplicates", "0.5", "--fault-seed", "3")],
                ids=["plain", "duplicates"])
def stack(request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    started = start_local(*request.param)
    yield started
    started.stop()


def _register(stack: LocalStack, handle: str) -> str:
    answer = stack.call("POST", "/users", {"handle": handle, "display_name": handle})
    assert answer.status == 201, answer
    return str(answer.body["user_id"])


def test_a_mention_is_listed_once_and_logged_once(stack: LocalStack) -> None:
    suffix = uuid.uuid4().hex[:8]
    alice, bob = _register(stack, f"alice_{suffix}"), _register(stack, f"bob_{suffix}")
    stack.drain()  # the registrations first: a handle is resolved when the mention is projected
    text = f"hello @alice_{suffix}, meet @nobody_{suffix}"
    created = stack.call("POST", "/posts", {"author_id": bob, "text": text})
    assert created.status == 201, created
    post_id = created.body["post_id"]
    stack.drain()

    page = stack.call("GET", f"/users/{alice}/notifications")
    assert page.status == 200, page
    assert page.body == {"items": [{"post_id": post_id, "author_id": bob, "text": text,
                                    "created_at": page.body["items"][0]["created_at"]}], "next_cursor": None}
    assert stack.call("GET", f"/users/{bob}/notifications").body == {"items": [], "next_cursor": None}
    assert stack.call("GET", f"/users/{uuid.uuid4()}/notifications").status == 404
    bad = stack.call("GET", f"/users/{alice}/notifications?limit=0")
    assert bad.status == 422 and bad.error == "validation_error" and bad.body.get("message"), bad
    assert stack.call("GET", f"/users/{alice}/notifications?cursor=nope").status == 422

    # an edit that mentions alice again notifies nobody new
    edited = stack.call("PATCH", f"/posts/{post_id}", {"text": text + " again", "expected_version": 1})
    assert edited.status == 200, edited
    stack.drain()
    items = stack.call("GET", f"/users/{alice}/notifications").body["items"]
    assert [i["post_id"] for i in items] == [post_id] and items[0]["text"] == text + " again"

    code = stack.stop()
    assert code == 0
    log = stack.process.stdout.read() if stack.process.stdout else ""
    lines = [line for line in log.splitlines() if "eventstack.notifications:" in line and post_id in line]
    assert len(lines) == 1, log[-3000:]
    assert re.search(rf"notify user {alice} \(@alice_{suffix}\): mentioned by {bob} in post {post_id}", lines[0])
    assert "Traceback" not in log
