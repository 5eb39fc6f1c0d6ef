"""`eventstack trace` and `eventstack history` against the local stack, as a user runs them.

Requests with an X-Correlation-Id go to the running `eventstack local`; once drained (every event
relayed, projected and archived), the real console script runs as a subprocess with the settings the
banner prints (AWS_ENDPOINT_URL, EVENTSTACK_LOCAL_URL) and its JSON output is checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from escore.envelope import utc_now
from tests.e2e.local_stack import LocalStack

pytestmark = pytest.mark.e2e

CONSOLE_SCRIPT = Path(sys.executable).with_name("eventstack")


def eventstack(stack: LocalStack, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=stack.aws, EVENTSTACK_LOCAL_URL=stack.api, AWS_REGION="us-east-1",
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", COLUMNS="200")
    return subprocess.run([str(CONSOLE_SCRIPT), *args, "--cache-dir", str(cache)], env=env,
                          capture_output=True, text=True, timeout=180)


def instant() -> str:
    """Now, strictly between the events before and after it."""
    time.sleep(0.005)
    now = utc_now()
    time.sleep(0.005)
    return now


def ok(answer: Any, status: int) -> Any:
    assert answer.status == status, answer
    return answer.body


def test_trace_and_history_of_a_request_through_the_local_stack(local_stack: LocalStack, tmp_path: Path) -> None:
    assert CONSOLE_SCRIPT.is_file(), CONSOLE_SCRIPT
    cid = f"e2e-trace-{uuid.uuid4()}"
    headers = {"X-Correlation-Id": cid}
    user = ok(local_stack.call("POST", "/users", {"handle": f"t{uuid.uuid4().hex[:10]}", "display_name": "Trace"},
                               headers=headers), 201)
    moments = {"before": instant()}
    post = ok(local_stack.call("POST", "/posts", {"author_id": user["user_id"], "text": "one"}, headers=headers), 201)
    post_id = post["post_id"]
    moments["created"] = instant()
    ok(local_stack.call("PATCH", f"/posts/{post_id}", {"text": "two", "expected_version": 1}, headers=headers), 200)
    moments["edited"] = instant()
    other = ok(local_stack.call("PATCH", f"/posts/{post_id}", {"text": "three", "expected_version": 2},
                                headers={"X-Correlation-Id": f"{cid}-other"}), 200)  # another request
    assert other["version"] == 3
    moments["edited_again"] = instant()
    ok(local_stack.call("DELETE", f"/posts/{post_id}?expected_version=3", headers=headers), 200)
    moments["deleted"] = instant()
    local_stack.drain()

    done = eventstack(local_stack, tmp_path / "cache", "trace", cid, "--format", "json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["correlation_id"] == cid
    entries = document["entries"]
    assert [(e["type"], e["stream_id"], e["version"]) for e in entries] == [
        ("UserRegistered", f"user-{user['user_id']}", 1),
        ("PostCreated", f"post-{post_id}", 1),
        ("PostEdited", f"post-{post_id}", 2),
        ("PostDeleted", f"post-{post_id}", 4),
    ]
    assert [e["service"] for e in entries] == ["profiles", "posts", "posts", "posts"]
    assert [e["occurred_at"] for e in entries] == sorted(e["occurred_at"] for e in entries)
    assert all(e["source"] == "both" and e["archived_at"] for e in entries), entries  # drained: all archived
    assert all(e["depth"] == 0 and e["causation_id"] for e in entries)
    assert "Traceback" not in done.stderr

    table = eventstack(local_stack, tmp_path / "cache", "trace", cid)
    assert table.returncode == 0, table.stderr
    assert "PostDeleted" in table.stdout and "4 event(s): 4 archived, 0 in a store only" in table.stdout

    texts = {"created": ("one", False, 1), "edited": ("two", False, 2), "edited_again": ("three", False, 3),
             "deleted": ("three", True, 4)}
    for moment, (text, deleted, version) in texts.items():
        done = eventstack(local_stack, tmp_path / "cache", "history", f"post-{post_id}", "--at", moments[moment],
                          "--format", "json")
        assert done.returncode == 0, done.stderr
        told = json.loads(done.stdout)
        assert (told["stream_id"], told["at"]) == (f"post-{post_id}", moments[moment])
        assert [e["version"] for e in told["events"]] == list(range(1, version + 1))
        assert (told["state"]["text"], told["state"]["deleted"], told["state"]["version"]) == (text, deleted, version)
    before = eventstack(local_stack, tmp_path / "cache", "history", f"post-{post_id}", "--at", moments["before"],
                        "--format", "json")
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)["state"] is None

    unknown = eventstack(local_stack, tmp_path / "cache", "trace", f"{cid}-nobody", "--format", "json")
    assert unknown.returncode == 0, unknown.stderr
    assert json.loads(unknown.stdout) == {"correlation_id": f"{cid}-nobody", "entries": []}
    bad = eventstack(local_stack, tmp_path / "cache", "history", f"post-{post_id}", "--at", "soon")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --at: 'soon' is not a time: use RFC 3339, e.g. 2026-11-26T14:00:00Z or 2026-11-26"], bad.stderr


def test_a_local_runtime_that_does_not_answer_is_one_line_and_exit_1(tmp_path: Path) -> None:
    from tests.e2e.local_stack import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=dead, EVENTSTACK_LOCAL_URL=dead, AWS_REGION="us-east-1",
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    for args in (["trace", "some-id"], ["history", "post-0b6f2f0e-1111-4000-8000-00000000000a", "--format", "json"]):
        done = subprocess.run([str(CONSOLE_SCRIPT), *args, "--cache-dir", str(tmp_path)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done
        assert done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: the local runtime does not answer at {dead}/_local/status"), lines
