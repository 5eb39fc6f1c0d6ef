"""The API worker pool (eventstack.local.workers) on its own: real worker processes, a test handler
(tests/support/local_workers_handlers.py), no AWS emulation.

Parallelism is shown by behaviour, not by timing: N invocations wait for each other at a barrier, which
only N invocations running at the same time, in N processes, can pass.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from eventstack.local.plan import FunctionPlan
from eventstack.local.workers import ApiWorkerPool, FunctionError, WorkerDied

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
HOOK = "tests.support.local_workers_handlers:build"
FUNCTIONS = {
    "posts-api": FunctionPlan("posts-api", "posts.api.handler", {"SERVICE_NAME": "posts"}),
    "profiles-api": FunctionPlan("profiles-api", "profiles.api.handler", {"SERVICE_NAME": "profiles"}),
}
ENV = {"PYTHONPATH": str(REPO)}  # the workers import the test handler from tests/


def make_pool(count: int, **kwargs: Any) -> ApiWorkerPool:
    pool = ApiWorkerPool(count, FUNCTIONS, builds=dict.fromkeys(FUNCTIONS, HOOK), **kwargs)
    pool.start(ENV)
    return pool


@pytest.fixture
def pool() -> Iterator[ApiWorkerPool]:
    """One worker: which process serves the next invocation is then certain."""
    started = make_pool(1)
    yield started
    started.stop()


class Lines(logging.Handler):
    """What eventstack.local logs at ERROR (the suite may run with -p no:logging: no caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def logged() -> Iterator[Lines]:
    lines = Lines()
    logger = logging.getLogger("eventstack.local")
    logger.addHandler(lines)
    try:
        yield lines
    finally:
        logger.removeHandler(lines)


def call(pool: ApiWorkerPool, function: str = "posts-api", **body: Any) -> tuple[dict[str, Any], bool]:
    result, cold = pool.invoke(function, {"body": json.dumps(body)})
    assert result["statusCode"] == 200, result
    return json.loads(result["body"]), cold


def gone(pid: int) -> bool:
    """Neither running nor a zombie: exited and reaped."""
    return not Path(f"/proc/{pid}").exists()


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def test_concurrent_invocations_run_at_once_in_as_many_processes(tmp_path: Path) -> None:
    parties = 3
    pool = make_pool(parties)
    try:
        with ThreadPoolExecutor(parties) as threads:
            answers = list(threads.map(lambda _: call(pool, do="barrier", dir=str(tmp_path), parties=parties)[0],
                                       range(parties)))
        assert all(a["met"] for a in answers), answers  # each waited until all were running
        assert len({a["pid"] for a in answers}) == parties
        assert {a["pid"] for a in answers} == set(pool.pids())
        assert all(a["pid"] != os.getpid() for a in answers)
    finally:
        pool.stop()


def test_a_worker_runs_one_invocation_at_a_time_and_the_others_wait_for_a_free_one(tmp_path: Path) -> None:
    pool = make_pool(2)
    try:
        with ThreadPoolExecutor(6) as threads:
            (tmp_path / "warm").mkdir()  # both workers warm (and both running at once), so neither starts late
            warm = list(threads.map(lambda _: call(pool, do="barrier", dir=str(tmp_path / "warm"), parties=2)[0],
                                    range(2)))
            assert all(a["met"] for a in warm), warm
            # Six invocations at once on two workers: each counts the invocations running beside it.
            (tmp_path / "running").mkdir()
            answers = list(threads.map(
                lambda _: call(pool, do="running", dir=str(tmp_path / "running"), seconds=0.3)[0], range(6)))
        assert max(a["max_running"] for a in answers) == 2, answers  # never more than the workers
        assert {a["pid"] for a in answers} == set(pool.pids())
        assert sum(w["invocations"] for w in pool.status()["workers"]) == 8
    finally:
        pool.stop()


def test_each_worker_builds_each_function_once_with_its_own_environment(pool: ApiWorkerPool) -> None:
    first, cold = call(pool, "posts-api")
    again, warm = call(pool, "posts-api")
    other, other_cold = call(pool, "profiles-api")
    assert (cold, warm, other_cold) == (True, False, True)
    assert first["built_in"] == again["built_in"] == other["built_in"] == first["pid"]
    assert (first["function"], first["service"]) == ("posts-api", "posts")
    assert (other["function"], other["service"]) == ("profiles-api", "profiles")


def test_a_worker_dying_mid_invocation_fails_that_one_and_is_replaced_once(
        pool: ApiWorkerPool, logged: Lines) -> None:
    before = call(pool)[0]["pid"]
    with pytest.raises(WorkerDied, match="SIGKILL"):
        call(pool, do="die")
    after, cold = call(pool)  # the next invocation succeeds, in a new process: a cold start
    assert after["pid"] != before and cold
    assert gone(before)  # reaped, not a zombie
    status = pool.status()
    assert status["replaced"] == 1
    [death] = status["deaths"]
    assert (death["pid"], death["serving"], death["replaced_by"]) == (before, "posts-api", after["pid"])
    assert "SIGKILL" in death["how"]
    lines = [line for line in logged.lines if f"(pid {before})" in line]
    assert len(lines) == 1, lines
    assert "while serving posts-api" in lines[0] and f"replaced by pid {after['pid']}" in lines[0]


def test_a_worker_killed_while_idle_is_replaced_before_the_next_invocation_needs_it(
        pool: ApiWorkerPool, logged: Lines) -> None:
    before = call(pool)[0]["pid"]
    os.kill(before, signal.SIGKILL)
    wait_for(lambda: pool.status()["replaced"] == 1)
    assert call(pool)[0]["pid"] != before  # the invocation after it did not fail
    assert gone(before)
    assert sum(f"(pid {before})" in line for line in logged.lines) == 1
    assert pool.status()["deaths"][0]["serving"] is None


def test_a_worker_that_died_since_its_last_invocation_does_not_fail_the_next(pool: ApiWorkerPool) -> None:
    before = call(pool)[0]["pid"]
    os.kill(before, signal.SIGKILL)
    wait_for(lambda: _state(before) in (None, "Z"))  # dead (an invocation racing the death itself fails)
    assert call(pool)[0]["pid"] != before  # whoever noticed first, the watcher or this invocation
    assert pool.status()["replaced"] == 1


def test_a_handler_error_is_a_function_error_and_keeps_the_worker(pool: ApiWorkerPool) -> None:
    before = call(pool)[0]["pid"]
    with pytest.raises(FunctionError, match="the handler failed on purpose") as raised:
        call(pool, do="raise")
    assert "Traceback" in str(raised.value)  # the worker's traceback, for the log
    with pytest.raises(FunctionError, match="not JSON serializable"):
        call(pool, do="not json")
    assert call(pool)[0]["pid"] == before
    assert pool.status()["replaced"] == 0


def test_an_invocation_past_the_timeout_kills_and_replaces_its_worker() -> None:
    pool = make_pool(1, timeout=1.0)
    try:
        before = call(pool)[0]["pid"]
        with pytest.raises(WorkerDied, match="timed out"):
            call(pool, do="sleep", seconds=30)
        assert call(pool)[0]["pid"] != before
        assert "timeout" in pool.status()["deaths"][0]["how"]
    finally:
        pool.stop()


def test_stop_ends_and_reaps_every_worker_even_a_busy_one() -> None:
    pool = make_pool(3)
    pids = pool.pids()
    call(pool)
    with ThreadPoolExecutor(1) as thread:
        busy = thread.submit(call, pool, do="sleep", seconds=60)
        wait_for(lambda: any(w["busy"] for w in pool.status()["workers"]))
        started = time.monotonic()
        pool.stop(timeout=1.0)
        with pytest.raises(WorkerDied):
            busy.result(timeout=10)
    assert time.monotonic() - started < 10
    assert all(gone(pid) for pid in pids), [(pid, gone(pid)) for pid in pids]
    assert pool.status()["replaced"] == 0  # stopping is not dying


ORPHAN_SCRIPT = """
import json, sys, time
from eventstack.local.plan import FunctionPlan
from eventstack.local.workers import ApiWorkerPool
pool = ApiWorkerPool(2, {"posts-api": FunctionPlan("posts-api", "posts.api.handler", {})},
                     builds={"posts-api": "tests.support.local_workers_handlers:build"})
pool.start({"PYTHONPATH": sys.argv[1]})
pool.invoke("posts-api", {"body": "{}"})
print(json.dumps(pool.pids()), flush=True)
time.sleep(600)
"""


def test_workers_exit_by_themselves_when_the_runtime_is_killed() -> None:
    runtime = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT, str(REPO)], stdout=subprocess.PIPE, text=True,
                               cwd=REPO)
    try:
        assert runtime.stdout is not None
        pids = json.loads(runtime.stdout.readline())
        runtime.kill()
        runtime.wait()
        # Orphans now (init, or a subreaper, reaps them): each must end on its own, soon.
        wait_for(lambda: all(_state(pid) in (None, "Z") for pid in pids))
    finally:
        if runtime.poll() is None:
            runtime.kill()
            runtime.wait()


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_the_count_is_checked() -> None:
    for count in (0, -1, 65):
        with pytest.raises(ValueError, match="1 to 64"):
            ApiWorkerPool(count, FUNCTIONS)
