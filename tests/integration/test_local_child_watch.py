"""The local runtime watching its emulation's child process (issue 9, defect 7), in process.

The e2e test (tests/e2e/test_local_child.py) checks the command's exit; these check what the runtime
shows between the death and its stop: the status, the drain, the answers, the one log line.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventstack.local.runtime import LocalConfig, LocalRuntime, describe_exit

pytestmark = pytest.mark.integration


@pytest.fixture
def runtime() -> Iterator[LocalRuntime]:
    started = LocalRuntime(LocalConfig(port=0, aws_port=0, firehose_interval=1))
    started.start()
    yield started
    started.stop(drain_timeout=0)


def get(url: str, method: str = "GET") -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(url, method=method, headers={"X-Correlation-Id": "c-1"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read()), {k.lower(): v for k, v in answer.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), {k.lower(): v for k, v in exc.headers.items()}


def died_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "the AWS emulation (moto, pid" in r.getMessage()]


def test_a_dead_emulation_is_noticed_once_reported_and_reaped(runtime: LocalRuntime,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="eventstack.local")
    pid = runtime.emulation_pid
    assert pid is not None
    assert runtime.status()["emulation"] == {"pid": pid, "running": True, "exit_code": None}

    os.kill(pid, signal.SIGKILL)
    assert runtime.emulation_died.wait(5), "the runtime did not notice its emulation's death"
    assert not Path(f"/proc/{pid}").exists(), "the dead emulation was not reaped"

    assert runtime.status()["emulation"] == {"pid": pid, "running": False, "exit_code": -9}
    started = time.monotonic()
    drained, status = runtime.drain(30)
    assert not drained and time.monotonic() - started < 1, "drain waited for an emulation that is gone"
    assert status["emulation"]["exit_code"] == -9

    # Over HTTP: the status still says what happened; everything else is a plain 503 JSON answer.
    code, body, _ = get(runtime.api_url + "/_local/status")
    assert code == 200 and body["emulation"]["running"] is False
    for method, path in (("POST", "/_local/drain"), ("GET", "/users/00000000-0000-4000-8000-000000000000"),
                         ("POST", "/posts")):
        code, body, headers = get(runtime.api_url + path, method)
        assert (code, body["error"]) == (503, "emulation_stopped"), (path, body)
        assert "killed by SIGKILL" in body["message"]
        assert headers["x-correlation-id"] == "c-1"

    started = time.monotonic()
    runtime.stop()
    assert time.monotonic() - started < 5
    assert len(died_lines(caplog)) == 1, caplog.text
    line = died_lines(caplog)[0]
    assert f"pid {pid}" in line and "SIGKILL" in line and "is gone" in line


def test_an_ordinary_stop_is_not_taken_for_a_death(runtime: LocalRuntime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="eventstack.local")
    pid = runtime.emulation_pid
    runtime.stop(drain_timeout=0)
    time.sleep(0.2)
    assert not runtime.emulation_died.is_set()
    assert died_lines(caplog) == []
    assert runtime.status()["emulation"] == {"pid": pid, "running": False, "exit_code": None}
    assert not Path(f"/proc/{pid}").exists()


@pytest.mark.parametrize(("code", "words"), [
    (-9, "was killed by SIGKILL (exit code -9)"),
    (-15, "was killed by SIGTERM (exit code -15)"),
    (1, "exited with code 1"),
    (0, "exited with code 0"),
])
def test_exit_codes_in_words(code: int, words: str) -> None:
    assert describe_exit(code) == words
