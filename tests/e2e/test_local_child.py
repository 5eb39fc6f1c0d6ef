"""The AWS emulation's child process dying under a running `eventstack local` (issue 9, defect 7).

The runtime must notice, say so once, reap the child and exit non-zero promptly: no half-dead
runtime answering 500 to everything, no stack trace per request, no zombie left behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
import urllib.error
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.local_stack import LocalStack, start_local

pytestmark = pytest.mark.e2e

PR_SET_CHILD_SUBREAPER = 36
EXIT_WITHIN = 10.0  # seconds from the kill to the runtime's exit, requests still arriving meanwhile
DIED = "the AWS emulation (moto, pid "


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def state(pid: int) -> str | None:
    """The one-letter process state ('Z' for a zombie), or None when the pid is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Make this test process the subreaper of its descendants while the test runs.

    Then when the runtime exits, a child it did not reap becomes *our* zombie (still visible in /proc)
    instead of being reaped at once by init, and the test can tell the two apart.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip("prctl(PR_SET_CHILD_SUBREAPER) is not available")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def test_the_runtime_exits_once_and_cleanly_when_the_emulation_dies(subreaper: None) -> None:
    stack: LocalStack = start_local("--firehose-interval", "1")
    emulation_pid = 0
    try:
        moto = [p for p in children(stack.process.pid) if "eventstack.local.moto_process" in cmdline(p)]
        assert len(moto) == 1, f"expected one emulation child of {stack.process.pid}, found {moto}"
        emulation_pid = moto[0]
        assert stack.status()["emulation"] == {"pid": emulation_pid, "running": True, "exit_code": None}
        user = stack.call("POST", "/users", {"handle": "u_" + uuid.uuid4().hex[:12], "display_name": "A"})
        assert user.status == 201, user

        os.kill(emulation_pid, signal.SIGKILL)
        killed = time.monotonic()
        # The runtime reaps the child the moment it dies, and that is when it notices: a request that
        # races the death itself may still reach a handler (and fail there, as against a dead AWS), but
        # none may once the pid is gone. Before the fix the pid stays a zombie, the test goes on anyway.
        while state(emulation_pid) is not None and time.monotonic() - killed < 2:
            time.sleep(0.001)
        # Clients keep calling, as they would: each gets a plain 503 or a refused connection, never a hang.
        answers: list[tuple[int, str | None, bool]] = []
        while stack.process.poll() is None and time.monotonic() - killed < EXIT_WITHIN:
            try:
                answer = stack.call("POST", "/posts", {"author_id": user.body["user_id"], "text": "hi"},
                                    headers={"X-Correlation-Id": "after-the-kill"}, timeout=5)
                answers.append((answer.status, answer.error,
                                answer.headers.get("x-correlation-id") == "after-the-kill"))
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.01)
        try:
            code = stack.process.wait(timeout=max(0.1, EXIT_WITHIN - (time.monotonic() - killed)))
        except subprocess.TimeoutExpired:
            pytest.fail(f"the runtime still runs {EXIT_WITHIN:g} s after its emulation died "
                        f"(answers meanwhile: {answers})")
        took = time.monotonic() - killed
        output = stack.process.stdout.read() if stack.process.stdout else ""
    finally:
        if stack.process.poll() is None:
            stack.process.kill()
            stack.process.wait()

    assert code == 3, output
    assert all(a == (503, "emulation_stopped", True) for a in answers), answers
    assert took < EXIT_WITHIN, output
    assert output.count(DIED) == 1, output
    died = next(line for line in output.splitlines() if DIED in line)
    assert f"pid {emulation_pid}" in died and "SIGKILL" in died and "state" in died, died
    assert "Traceback" not in output, output
    assert "exiting" in output.splitlines()[-1], output
    # Reaped by the runtime: not left as a zombie that we, its subreaper, would now hold.
    assert state(emulation_pid) is None, f"emulation pid {emulation_pid} left in state {state(emulation_pid)}"
    assert emulation_pid not in children(os.getpid())
