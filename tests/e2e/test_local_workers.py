"""`eventstack local`'s API worker processes, over HTTP (issue 9, "Load held by the local API").

The API functions run in worker processes, one invocation at a time each, like Lambda's execution
environments: concurrent requests spread over them; a worker that dies is replaced and reported
once; Ctrl-C, or the runtime's own death, leaves no worker behind (alive or as a zombie).
The pool's finer behaviour (parallelism proven at a barrier, timeouts, handler errors) is in
tests/unit/test_local_workers_pool.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.e2e.local_stack import LocalStack, start_local
from tests.e2e.test_local_child import children, cmdline, state, subreaper  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("subreaper")]

WORKER = "eventstack.local.workers"


def workers_of(stack: LocalStack) -> list[int]:
    return [p for p in children(stack.process.pid) if WORKER in cmdline(p)]


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def register(stack: LocalStack) -> str:
    answer = stack.call("POST", "/users", {"handle": "w_" + uuid.uuid4().hex[:12], "display_name": "W"})
    assert answer.status == 201, answer
    return str(answer.body["user_id"])


def test_concurrent_requests_spread_over_the_workers_and_a_killed_one_is_replaced() -> None:
    stack = start_local("--firehose-interval", "1", "--api-workers", "2")
    try:
        status = stack.status()
        pids = [w["pid"] for w in status["api_workers"]["workers"]]
        assert status["api_workers"]["count"] == 2 and sorted(pids) == sorted(workers_of(stack))
        assert status["functions"]["posts-api"]["runs_in"] == "api workers"
        user = register(stack)
        # Idle workers are taken most recently used first, so the second serves only while the first is
        # busy: both serving proves requests overlapped in two processes.
        with ThreadPoolExecutor(8) as clients:
            answers = list(clients.map(lambda n: stack.call("POST", "/posts", {"author_id": user, "text": f"p{n}"}),
                                       range(40)))
        assert all(a.status == 201 for a in answers), answers
        served = {w["pid"]: w["invocations"] for w in stack.status()["api_workers"]["workers"]}
        assert all(n > 0 for n in served.values()), served

        victim = pids[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: stack.status()["api_workers"]["replaced"] == 1)
        for n in range(6):  # every request after it succeeds, whichever worker it reaches
            assert stack.call("POST", "/posts", {"author_id": user, "text": f"after {n}"}).status == 201
        status = stack.status()
        [death] = status["api_workers"]["deaths"]
        assert death["pid"] == victim and "SIGKILL" in death["how"]
        now = [w["pid"] for w in status["api_workers"]["workers"]]
        assert victim not in now and death["replaced_by"] in now
        assert state(victim) is None  # reaped by the runtime
        stack.drain()
        profile = stack.call("GET", f"/users/{user}").body
        assert profile["post_count"] == 46
    finally:
        code = stack.stop()
    output = stack.process.stdout.read() if stack.process.stdout else ""
    assert code == 0, output
    assert output.count(f"(pid {victim})") == 1, output  # reported once
    assert "Traceback" not in output, output


def test_ctrl_c_stops_every_worker_and_leaves_no_child() -> None:
    stack = start_local("--api-workers", "3")
    try:
        register(stack)
        pids = workers_of(stack)
        assert len(pids) == 3
        emulation = [p for p in children(stack.process.pid) if "moto_process" in cmdline(p)]
    finally:
        code = stack.stop()
    assert code == 0
    for pid in pids + emulation:
        assert state(pid) is None, f"pid {pid} ({cmdline(pid)}) left in state {state(pid)}"
    assert not [p for p in children(os.getpid()) if WORKER in cmdline(p)]


def test_the_workers_end_with_the_runtime_when_it_is_killed() -> None:
    stack = start_local("--api-workers", "2")
    inherited: list[int] = []
    try:
        register(stack)
        pids = workers_of(stack)
        assert len(pids) == 2
        inherited = children(stack.process.pid)  # the workers and the emulation
        stack.process.kill()
        stack.process.wait()
        # Orphans of the killed runtime are ours now (we are the subreaper): each must exit by itself.
        wait_for(lambda: all(state(pid) in (None, "Z") for pid in inherited))
    finally:
        if stack.process.poll() is None:
            stack.process.kill()
            stack.process.wait()
        for pid in inherited:  # reap them
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
