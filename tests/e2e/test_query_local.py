"""Done-when check of `eventstack query`: after traffic against the local stack and a drain, the real
console script counts, over the archive, exactly the events the event stores hold; `events_raw` holds
at least as many rows; a second query after more traffic downloads only the new objects (ETag cache)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from eventstack.topology import TOPOLOGY
from tests.e2e.local_stack import LocalStack

pytestmark = pytest.mark.e2e

SCRIPT = shutil.which("eventstack", path=str(Path(sys.executable).parent)) or "eventstack"
SYNCED = re.compile(r"synced (\d+) archive objects: (\d+) new or changed")


def traffic(stack: LocalStack, users: int = 3, posts: int = 2) -> None:
    for _ in range(users):
        answer = stack.call("POST", "/users", {"handle": "q_" + uuid.uuid4().hex[:12], "display_name": "Q"})
        assert answer.status == 201, answer
        author = answer.body["user_id"]
        for n in range(posts):
            created = stack.call("POST", "/posts", {"author_id": author, "text": f"query #audit {n}"})
            assert created.status == 201, created
    stack.drain()  # 200: every record delivered, Firehose flushed


def stored(stack: LocalStack) -> int:
    return sum(len(stack.event_store(service.name)) for service in TOPOLOGY.services)


def query(stack: LocalStack, sql: str, cache: Path) -> tuple[list[dict[str, Any]], str]:
    env = dict(os.environ, AWS_ENDPOINT_URL=stack.status()["aws_endpoint_url"], EVENTSTACK_LOCAL_URL=stack.api,
               XDG_CACHE_HOME=str(cache), AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_REGION="us-east-1")
    done = subprocess.run([SCRIPT, "query", sql, "--format", "json"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout), done.stderr


def test_query_counts_what_the_stores_hold_and_syncs_only_new_objects(local_stack: LocalStack, tmp_path: Path) -> None:
    traffic(local_stack)
    rows, said = query(local_stack, "SELECT count(DISTINCT event_id) AS n FROM events", tmp_path)
    assert rows == [{"n": stored(local_stack)}], said
    first = SYNCED.search(said)
    assert first, said
    keys_before = set(local_stack.archive_keys())
    assert int(first.group(1)) == len([k for k in keys_before if k.startswith("events/")])

    bucket = local_stack.status()["archive_bucket"]
    endpoint = local_stack.status()["aws_endpoint_url"].split("://", 1)[1].replace(":", "-")
    assert (tmp_path / "eventstack" / endpoint / bucket / "manifest.json").is_file()  # the default cache folder

    counts, _ = query(local_stack, "SELECT (SELECT count(*) FROM events_raw) AS raw, (SELECT count(*) FROM events) AS "
                                   "unique_events", tmp_path)
    assert counts[0]["raw"] >= counts[0]["unique_events"] == stored(local_stack)

    traffic(local_stack, users=2, posts=1)
    new_keys = {k for k in local_stack.archive_keys() if k.startswith("events/")} - keys_before
    assert new_keys
    rows, said = query(local_stack, "SELECT count(DISTINCT event_id) AS n FROM events", tmp_path)
    assert rows == [{"n": stored(local_stack)}], said
    second = SYNCED.search(said)
    assert second, said
    assert int(second.group(2)) == len(new_keys) < int(second.group(1))  # only the new objects downloaded
