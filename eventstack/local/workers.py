"""The API functions in worker processes: Lambda's concurrent execution environments, on one machine.

On AWS each concurrent invocation of a function gets an execution environment of its own (a
process), which serves one invocation at a time and is reused while warm. Here a pool of worker
processes plays that part for the API functions: a request takes an idle worker (the most recently
used first, as Lambda reuses warm environments), the worker runs the handler and answers, and the
request gives the worker back. A worker builds each function's handler on its first invocation of
that function (a cold start) with that function's environment (`module.build(env)`, the same as in
process), and reaches the emulation through AWS_ENDPOINT_URL like any Lambda handler.

Each worker is `python -m eventstack.local.workers --channel FD`: one end of a socket pair carries
the invocations as JSON lines (the event in, the result out, as Lambda's runtime API does). Why not
concurrent.futures.ProcessPoolExecutor or multiprocessing.Pool: one dead worker breaks a whole
ProcessPoolExecutor (every pending call fails, every worker goes), and multiprocessing.Pool hangs the
call of a worker that dies. Here a dead worker fails only its own invocation (API Gateway's 502), is
reaped at once by the thread that waits on it, reported once (the log, /_local/status) and replaced.
A worker exits when its channel closes (the runtime stopping, or gone: no orphans), ignores Ctrl-C
(the runtime drains first, then closes the channels) and is in a session of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from eventstack.loader import ensure_lambdas_importable, load_builder
from eventstack.local.functions import LambdaContext, load_build
from eventstack.local.plan import FunctionPlan

log = logging.getLogger("eventstack.local")

MAX_API_WORKERS = 64
INVOCATION_TIMEOUT_SECONDS = 30.0  # a worker that takes longer is killed and replaced (Lambda's timeout)
STOP_GRACE_SECONDS = 5.0  # after its channel closes, how long a worker gets to exit before SIGKILL
FAILED_START_SECONDS = 5.0  # a worker dying this soon without answering anything failed to start
MAX_RESTART_DELAY_SECONDS = 30.0
DEATHS_KEPT = 20


def default_api_workers() -> int:
    """Two per core, between 2 and 8: an API invocation mostly waits on the emulation."""
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


class FunctionError(RuntimeError):
    """The handler raised (or returned what is not JSON): Lambda's function error."""


class WorkerDied(RuntimeError):
    """The worker died during the invocation (crashed, killed, or timed out)."""


def describe_exit(code: int | None) -> str:
    """'exited with code 1', 'was killed by SIGKILL (exit code -9)': a Popen return code in words."""
    if code is None:
        return "is running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} (exit code {code})"
    return f"exited with code {code}"


# -- the runtime's side ------------------------------------------------------------------------
@dataclass
class _Process:
    """One worker process and its channel."""

    process: subprocess.Popen[bytes]
    reader: BinaryIO
    writer: BinaryIO
    sock: socket.socket
    started: float
    invocations: int = 0
    serving: str | None = None  # the function it is running now
    timed_out: bool = False

    def close(self) -> None:
        for stream in (self.writer, self.reader):
            with contextlib.suppress(OSError):
                stream.close()
        with contextlib.suppress(OSError):
            self.sock.close()


@dataclass
class _Slot:
    """A place in the pool: its current process, replaced when that one dies."""

    index: int
    current: _Process | None = None
    failed_starts: int = 0
    restart_at: float = 0.0  # after failed starts: not before this (monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ApiWorkerPool:
    """`count` worker processes serving the functions of `functions` (name -> plan).

    `builds` names, for some functions, a build function to use instead of the handler module's
    (`package.module:attribute`, imported in the worker): the tests' hook for handlers that must run
    in a worker process.
    """

    def __init__(self, count: int, functions: Mapping[str, FunctionPlan], builds: Mapping[str, str] | None = None,
                 timeout: float = INVOCATION_TIMEOUT_SECONDS):
        if not 1 <= count <= MAX_API_WORKERS:
            raise ValueError(f"the API needs 1 to {MAX_API_WORKERS} workers, not {count}")
        self.count = count
        self.timeout = timeout
        self._env: dict[str, str] = {}
        self._setup = (json.dumps({
            "functions": {
                name: {"handler": plan.handler, "env": dict(plan.env), "arn": plan.arn,
                       "build": (builds or {}).get(name)}
                for name, plan in functions.items()
            },
        }) + "\n").encode()
        self._slots = [_Slot(i) for i in range(count)]
        self._idle: queue.LifoQueue[_Slot] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._stopping = False
        self._watchers: list[threading.Thread] = []
        self.replaced = 0
        self.deaths: deque[dict[str, Any]] = deque(maxlen=DEATHS_KEPT)

    def start(self, env: Mapping[str, str]) -> None:
        """Start every worker with this process's environment and `env` (the emulation's endpoint...).
        They import the handler modules meanwhile; none is waited for."""
        self._env = {**os.environ, **env}
        for slot in self._slots:
            with slot.lock:
                slot.current = self._spawn(slot)
            self._idle.put(slot)

    def _spawn(self, slot: _Slot) -> _Process:
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__, "--channel", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), env=self._env, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            theirs.close()
        worker = _Process(process, ours.makefile("rb"), ours.makefile("wb"), ours, time.monotonic())
        with contextlib.suppress(OSError):  # a worker that died at once is noticed by its watcher
            worker.writer.write(self._setup)
            worker.writer.flush()
        watcher = threading.Thread(target=self._watch, args=(slot, worker), name=f"api-worker-{slot.index}-watch",
                                   daemon=True)
        with self._lock:
            self._watchers = [w for w in self._watchers if w.is_alive()] + [watcher]
        watcher.start()
        log.debug("API worker %d started: pid %d", slot.index, process.pid)
        return worker

    def _watch(self, slot: _Slot, worker: _Process) -> None:
        """Wait for the process to exit (which reaps it: no zombie), then replace it unless stopping."""
        worker.process.wait()
        self._gone(slot, worker)

    def _gone(self, slot: _Slot, worker: _Process) -> None:
        """`worker` has exited: report it once and replace it (whoever notices first: watcher or request)."""
        if worker.process.returncode is None:  # exited, but its watcher has not reaped it yet
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(STOP_GRACE_SECONDS)
        with slot.lock:
            if slot.current is not worker:  # handled already
                return
            if worker.serving is None:  # else the request reading from it closes it
                worker.close()
            slot.current = None
            if self._stopping:
                return
            code = worker.process.returncode
            lived = time.monotonic() - worker.started
            failed_start = worker.invocations == 0 and worker.serving is None and lived < FAILED_START_SECONDS
            slot.failed_starts = slot.failed_starts + 1 if failed_start else 0
            delay = min(MAX_RESTART_DELAY_SECONDS, 2.0 ** slot.failed_starts) if slot.failed_starts > 1 else 0.0
            slot.restart_at = time.monotonic() + delay
            how = f"was killed after the {self.timeout:g} s timeout" if worker.timed_out else describe_exit(code)
            death = {
                "worker": slot.index, "pid": worker.process.pid, "exit_code": code, "how": how,
                "serving": worker.serving, "invocations": worker.invocations,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            replacement = self._spawn(slot) if delay == 0 else None
            slot.current = replacement
            death["replaced_by"] = replacement.process.pid if replacement else None
            with self._lock:
                self.replaced += 1
                self.deaths.append(death)
        serving = f" while serving {worker.serving}" if worker.serving else ""
        then = (f"replaced by pid {replacement.process.pid}" if replacement
                else f"it failed to start {slot.failed_starts} times in a row; the next starts in {delay:g} s")
        log.error("API worker %d (pid %d) %s%s; %s", slot.index, worker.process.pid, how, serving, then)

    def _current(self, slot: _Slot) -> _Process:
        """The slot's live process, started now if its last one died (and any restart delay is over)."""
        while True:
            with slot.lock:
                worker = slot.current
                if worker is None:
                    if self._stopping:
                        raise WorkerDied("the local runtime is stopping")
                    if time.monotonic() < slot.restart_at:
                        raise WorkerDied(f"API worker {slot.index} keeps failing to start")
                    slot.current = worker = self._spawn(slot)
                if not _exited(worker.process):
                    return worker
            self._gone(slot, worker)  # died since it last served: not this invocation's fault

    def invoke(self, function: str, event: dict[str, Any]) -> tuple[Any, bool]:
        """Run `function` on `event` in an idle worker; return (result, whether it was a cold start).

        Raises FunctionError when the handler failed and WorkerDied when its process did."""
        line = (json.dumps({"function": function, "event": event, "request_id": str(uuid.uuid4())}) + "\n").encode()
        slot = self._idle.get()  # blocks while every worker is busy: requests queue, as at Lambda's concurrency limit
        try:
            worker = self._current(slot)
            worker.serving = function
            try:
                worker.sock.settimeout(self.timeout)
                worker.writer.write(line)
                worker.writer.flush()
                answer = worker.reader.readline()
            except TimeoutError:
                worker.timed_out = True
                with contextlib.suppress(OSError):
                    worker.process.kill()
                answer = b""
            except (OSError, ValueError):  # ValueError: the channel was closed under us
                answer = b""
            if not answer:  # the worker died with the invocation: report and replace it (or its watcher did)
                try:
                    worker.process.wait(STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:  # closed its channel yet still runs: end it
                    worker.process.kill()
                    worker.process.wait()
                how = "timed out" if worker.timed_out else describe_exit(worker.process.returncode)
                self._gone(slot, worker)
                worker.close()
                raise WorkerDied(f"the API worker (pid {worker.process.pid}) running {function} {how}")
            worker.invocations += 1
            worker.serving = None
            reply = json.loads(answer)
            if "error" in reply:
                raise FunctionError(f"{reply['error']}: {reply.get('message', '')}\n{reply.get('trace', '')}".rstrip())
            return reply["result"], bool(reply.get("cold"))
        finally:
            self._idle.put(slot)

    def pids(self) -> list[int]:
        return [s.current.process.pid for s in self._slots if s.current is not None]

    def status(self) -> dict[str, Any]:
        workers = []
        for slot in self._slots:
            worker = slot.current
            workers.append({
                "worker": slot.index,
                "pid": worker.process.pid if worker else None,
                "invocations": worker.invocations if worker else 0,
                "busy": bool(worker and worker.serving),
            })
        with self._lock:
            return {"count": self.count, "replaced": self.replaced, "workers": workers, "deaths": list(self.deaths)}

    def stop(self, timeout: float = STOP_GRACE_SECONDS) -> None:
        """Close every channel (a worker exits when it reads the end), wait, kill what is left; reap all."""
        with self._lock:
            self._stopping = True
            watchers = list(self._watchers)
        workers = []
        for slot in self._slots:
            with slot.lock:
                if slot.current is not None:
                    workers.append(slot.current)
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + timeout
        for worker in workers:
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        for worker in workers:
            worker.close()
        for watcher in watchers:
            watcher.join(1.0)

    def kill(self) -> None:
        """At once (a second Ctrl-C): SIGKILL every worker and reap it."""
        with self._lock:
            self._stopping = True
        for slot in self._slots:
            worker = slot.current
            if worker is not None:
                with contextlib.suppress(OSError):
                    worker.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.process.wait(1.0)


def _exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether the child has exited, without reaping it (its watcher does) and without Popen's lock,
    which the watcher holds while it waits: one waitid(WNOWAIT)."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped meanwhile
        return True


# -- the worker's side -------------------------------------------------------------------------
class _Instances:
    """The handler instances of one worker: one per function, built on its first invocation."""

    def __init__(self, functions: Mapping[str, Mapping[str, Any]]):
        self.functions = functions
        self.built: dict[str, Callable[[dict[str, Any], Any], Any]] = {}

    def preload(self) -> None:
        """Import the handler modules now, before the first invocation waits for them."""
        for spec in self.functions.values():
            with contextlib.suppress(Exception):  # a failure is raised again, and answered, on invocation
                load_build(spec["build"]) if spec.get("build") else load_builder(spec["handler"])

    def invoke(self, name: str, event: dict[str, Any], request_id: str) -> tuple[Any, bool]:
        spec = self.functions[name]
        cold = name not in self.built
        if cold:
            build = load_build(spec["build"]) if spec.get("build") else load_builder(spec["handler"])
            self.built[name] = build(spec["env"])
        context = LambdaContext(function_name=name, aws_request_id=request_id, invoked_function_arn=spec["arn"],
                                log_group_name=f"/aws/lambda/{name}", started=time.monotonic(),
                                timeout_seconds=INVOCATION_TIMEOUT_SECONDS)
        return self.built[name](event, context), cold


def serve(channel: socket.socket) -> None:
    reader, writer = channel.makefile("rb"), channel.makefile("wb")
    setup = reader.readline()
    if not setup:
        return
    instances = _Instances(json.loads(setup)["functions"])
    instances.preload()
    for line in reader:  # ends when the runtime closes the channel, or is gone
        request = json.loads(line)
        cold = request["function"] not in instances.built
        try:
            result, cold = instances.invoke(request["function"], request["event"], request["request_id"])
            answer = json.dumps({"result": result, "cold": cold})
        except Exception as exc:  # the handler's failure is the invocation's answer, as Lambda reports it
            answer = json.dumps({"error": type(exc).__name__, "message": str(exc), "cold": cold,
                                 "trace": traceback.format_exc()})
        writer.write(answer.encode() + b"\n")
        writer.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description="An API worker of the local runtime (started by it).")
    parser.add_argument("--channel", type=int, required=True, help="file descriptor of the socket to the runtime")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runtime drains on Ctrl-C, then closes the channel
    ensure_lambdas_importable()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the runtime went away
        serve(socket.socket(fileno=args.channel))
    sys.stdout.flush()
    os._exit(0)  # nothing to tear down: skip the interpreter's slow teardown of botocore's objects


if __name__ == "__main__":
    main()
