"""The README's examples run as written: every ```sh block, in order, against the local stack (with the
test runtime's ports in place of 8000 and 5000), with the AWS CLI that `make setup` installs. Never
skipped: a machine without the CLI fails here rather than quietly stop checking the README.
tests/e2e/test_walkthroughs.py runs it again beside the other documents' walkthroughs, in more orders."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.e2e.local_stack import LocalStack
from tests.e2e.walkthroughs import REPO, blocks, run

pytestmark = pytest.mark.e2e

README = REPO / "README.md"


def test_every_route_has_a_curl_example() -> None:
    from eventstack.topology import TOPOLOGY

    text = "\n".join(blocks(README))
    for service in TOPOLOGY.services:
        for route in service.routes:
            path = re.sub(r"\{[a-z_]+\}", "$", route.resource)
            pattern = re.escape(path).replace(r"\$", r"(\$[A-Z_]+|[a-z0-9_]+)") + r"(\?|\s|\"|$)"
            calls = [line for line in text.splitlines() if re.search(pattern, line)]
            if route.method == "GET":
                assert any("-X " not in c for c in calls), route
            else:
                assert any(f"-X {route.method}" in c for c in calls), route
    assert "/_local/status" in text and "/_local/drain" in text


def test_the_readme_sets_what_the_aws_cli_needs() -> None:
    text = "\n".join(blocks(README))
    assert 'export PATH="$PWD/.venv/bin:$PATH"' in text
    export = next(line for line in text.splitlines() if line.startswith("export AWS_ENDPOINT_URL="))
    for name in ("AWS_REGION=", "AWS_DEFAULT_REGION="):  # AWS CLI v1 reads only the second
        assert name in export
    assert "USER=" not in re.sub(r"USER_ID=", "", text)  # never overwrites the shell's $USER


def test_the_examples_run_as_written(local_stack: LocalStack) -> None:
    assert shutil.which("curl"), "the README's examples need curl"
    done = run(README, local_stack, timeout=180)
    out = done.stdout
    assert done.code == 0, done.output
    assert '"display_name":"Alice Liddell"' in out
    assert '"post_count":1' in out  # after the drain: "Second post" only (the first was deleted)
    assert '"tag":"intro"' in out
    assert '"error":"conflict"' in out
    answers = re.findall(r'\{"post_id":"[0-9a-f-]+","version":1\}', out)
    assert any(answers.count(a) == 2 for a in answers)  # the idempotent retry answered the same
    assert "200" in out.splitlines()
    assert "posts-events" in out
    assert '"event_id"' in out and '"type":"PostCreated"' in out
    assert "events/service=posts/year=" in out
    assert re.search(r'"handle": \{\s*"S": "alice_[0-9a-f]{8}"', out)  # the user's own profile item
    assert re.search(r"posts: \d+ events in the store, .*missing: 0", out)
    assert "user_timeline-from-posts" in out  # dlq list
