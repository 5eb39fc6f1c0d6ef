"""The README's examples run as written: every ```sh block, in order, against the local stack
(with the test runtime's ports in place of 8000 and 5000)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.local_stack import LocalStack

pytestmark = pytest.mark.e2e

DOC = Path(__file__).resolve().parents[2] / "README.md"


def blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", DOC.read_text(), re.S | re.M)


def test_every_route_has_a_curl_example() -> None:
    from eventstack.topology import TOPOLOGY

    text = "\n".join(blocks())
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


@pytest.mark.skipif(shutil.which("aws") is None or shutil.which("curl") is None, reason="needs curl and the AWS CLI")
def test_the_examples_run_as_written(local_stack: LocalStack) -> None:
    api_port = local_stack.api.rsplit(":", 1)[1]
    aws_port = local_stack.aws.rsplit(":", 1)[1]
    script = "set -euo pipefail\n" + "\n".join(blocks())
    script = script.replace("127.0.0.1:8000", f"127.0.0.1:{api_port}").replace("127.0.0.1:5000", f"127.0.0.1:{aws_port}")
    script = script.replace('"handle": "alice"', '"handle": "alice_docs"')
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    out = done.stdout
    assert done.returncode == 0, done.stdout + done.stderr
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
