"""The local runtime's orchestrator: the emulation, the functions, the pollers, Firehose, the HTTP API.

Processes: this one; the emulation (moto) in a child of its own; with `api_workers`, that many API
worker processes (eventstack.local.workers), where the API functions run, so concurrent requests run
in parallel as on Lambda (without, the API handlers run in the request's thread here).
Threads: the API server (a thread per request); one poller thread per event source mapping and one
per Firehose delivery stream, whose functions (publishers, projectors) run in the poller's thread.
Nothing spins: idle pollers wait on `Activity`, which API requests and finished batches signal, and
otherwise read each idle shard at most every MAX_IDLE_POLL_SECONDS.

The emulation holds every resource's state in memory. A thread waits on it: if it exits while the
runtime is not stopping, the state is gone for good, so the runtime says so once, answers 503 to
whatever still arrives, stops the pollers and the API and exits with EXIT_EMULATION_DIED
(docs/decisions.md: exit rather than restart). An API worker that dies is only replaced
(eventstack.local.workers): it held no state.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from escore.correlation import correlation_id_of
from eventstack.local.emulation import (
    STATUS_CONFIG,
    MotoEmulation,
    PortInUse,
    Resources,
    bind,
    create_resources,
    make_client,
)
from eventstack.local.faults import Faults, FaultSettings
from eventstack.local.firehose import FirehoseDelivery
from eventstack.local.functions import (
    FunctionRegistry,
    apply_process_environment,
    load_build,
    powertools_environment,
    process_environment,
    restore_process_environment,
)
from eventstack.local.mappings import EventSourceMapping, PollingWorker
from eventstack.local.plan import STAGE, LocalPlan, build_plan
from eventstack.local.server import ApiRequestHandler, ApiServer
from eventstack.local.sources import Activity, DynamoDBStreamSource, KinesisSource
from eventstack.local.workers import ApiWorkerPool, describe_exit

log = logging.getLogger("eventstack.local")
NOTIFICATIONS_LOG = "eventstack.notifications"  # the logger of notifications.notifier.LogNotifier

__all__ = ["EXIT_EMULATION_DIED", "LocalConfig", "LocalRuntime", "PortInUse", "describe_exit"]

EXIT_EMULATION_DIED = 3  # `eventstack local`'s exit code when the emulation's process died under it
IN_FLIGHT_GRACE_SECONDS = 2.0  # after the emulation died: how long requests already in a handler get to answer


@dataclass
class LocalConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    aws_port: int = 5000
    firehose_interval: float = 5.0
    faults: FaultSettings = field(default_factory=FaultSettings)
    shard_count: int = 1
    log_level: str = "WARNING"
    drain_on_stop: float = 10.0  # seconds Ctrl-C waits for in-flight work
    # API worker processes (1..MAX_API_WORKERS; `eventstack local` defaults to default_api_workers()).
    # 0: the API handlers in this process, as embedders that hook botocore here need (bench/cost.py).
    api_workers: int = 0


class LocalRuntime:
    def __init__(self, config: LocalConfig | None = None, plan: LocalPlan | None = None,
                 handlers: Mapping[str, Callable[..., Any] | str] | None = None):
        """`handlers` replaces a function's `build` by name (tests use tiny handlers): a callable runs in
        this process; a `package.module:attribute` string is imported where the function runs (an API
        function's worker processes too)."""
        self.config = config or LocalConfig()
        # A projection's notifications (NOTIFIER=log locally) are lines of this log, shown at INFO even
        # when the runtime is otherwise quiet (docs/notifications.md).
        logging.getLogger(NOTIFICATIONS_LOG).setLevel(
            logging.INFO if self.config.log_level.upper() != "ERROR" else logging.ERROR)
        # Building the plan imports the API modules (their routes), and with them Powertools' Logger,
        # which takes its level from the environment then: the runtime's, not the caller's.
        previous = apply_process_environment(powertools_environment(self.config.log_level))
        try:
            self.plan = plan or build_plan()
        finally:
            restore_process_environment(previous)
        self.activity = Activity()
        self.faults = Faults(self.config.faults)
        handlers = dict(handlers or {})
        in_process = {name: h for name, h in handlers.items() if callable(h)}
        by_path = {name: h for name, h in handlers.items() if isinstance(h, str)}
        api_functions = {name: self.plan.function(name) for name in dict.fromkeys(self.plan.routes.values())
                         if name not in in_process}
        self.pool: ApiWorkerPool | None = None
        if self.config.api_workers and api_functions:
            self.pool = ApiWorkerPool(self.config.api_workers, api_functions, builds=by_path)
        remote = dict.fromkeys(api_functions, self.pool.invoke) if self.pool else {}
        for name, path in by_path.items():
            if name not in remote:
                in_process[name] = load_build(path)
        self.functions = FunctionRegistry(self.plan.functions, in_process, remote=remote)
        self.emulation = MotoEmulation(self.config.host if self.config.host in ("127.0.0.1", "localhost")
                                       else "127.0.0.1", self.config.aws_port, own_process=True)
        self.resources = Resources()
        self.mappings: list[EventSourceMapping] = []
        self.deliveries: list[FirehoseDelivery] = []
        self.api = ApiServer(self, self.plan.routes)
        self._http: Any = None
        self._http_thread: threading.Thread | None = None
        self._previous_env: dict[str, str | None] = {}
        self._sqs: Any = None
        self.started_at = 0.0
        self.ready_seconds = 0.0
        self._stopping = False  # set once stop() stops the emulation: its exit is expected from then on
        self._wake = threading.Event()  # the foreground loop's: a signal, or the emulation died
        self.emulation_died = threading.Event()
        self.emulation_pid: int | None = None
        self.emulation_exit_code: int | None = None

    # -- life cycle --------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://{self.config.host}:{self.config.port}"

    @property
    def aws_endpoint_url(self) -> str:
        return self.emulation.endpoint_url

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.emulation.start()  # raises PortInUse
        self._watch_emulation()
        try:
            self._http = bind(self.config.host, self.config.port, self._gate, "the API", "--port",
                              request_handler=ApiRequestHandler)
        except BaseException:
            self._stopping = True
            self.emulation.stop()
            raise
        self.config.port = self._http.server_address[1]
        env = process_environment(self.aws_endpoint_url, self.config.log_level)
        self._previous_env = apply_process_environment(env)
        try:
            if self.pool is not None:
                self.pool.start(env)  # the workers import their modules while the resources are made
            self._create()
        except BaseException:
            self.stop(drain_timeout=0)
            raise
        self._http_thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.2},
                                             name="api-server", daemon=True)
        self._http_thread.start()
        self.ready_seconds = time.monotonic() - self.started_at

    # -- the emulation's child process -------------------------------------------------------
    def _watch_emulation(self) -> None:
        process = self.emulation.process
        if process is None:  # moto in this process: nothing to watch
            return
        self.emulation_pid = process.pid
        threading.Thread(target=self._wait_for_emulation, args=(process,), name="emulation-watch",
                         daemon=True).start()

    def _wait_for_emulation(self, process: subprocess.Popen[str]) -> None:
        """Block until the child exits; that also reaps it, so it never lingers as a zombie."""
        code = process.wait()
        if self._stopping:
            return
        self.emulation_exit_code = code
        self.emulation_died.set()
        for worker in self.workers:  # their next failed read ends them, quietly
            worker.signal_stop()
        log.error(
            "the AWS emulation (moto, pid %d) %s. Its state (every table, stream, queue and the archive) "
            "was in its memory and is gone, so the local runtime stops now (exit code %d); start it again "
            "for an empty stack.", process.pid, describe_exit(code), EXIT_EMULATION_DIED,
        )
        self._wake.set()

    def _emulation_exited(self) -> bool:
        """Whether the child has exited, even if the watcher has not run yet (it needs the GIL, and may
        wait a switch interval for it): one waitid(WNOWAIT) per request, which leaves it to be reaped."""
        pid = self.emulation_pid
        if pid is None or self._stopping or not hasattr(os, "waitid"):
            return False
        try:
            return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:  # reaped already: by the watcher
            return True

    def _gate(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """The API's front door: once the emulation is gone, a plain 503 instead of a handler's failure
        (or a drain's timeout); only the status still answers, to say what happened."""
        if environ.get("PATH_INFO") == "/_local/status" and environ.get("REQUEST_METHOD") == "GET":
            return self.api(environ, start_response)
        if not self.emulation_died.is_set():
            if not self._emulation_exited():
                return self.api(environ, start_response)
            self.emulation_died.wait(1.0)  # the watcher is reaping it this very moment
        correlation_id = correlation_id_of(environ.get("HTTP_X_CORRELATION_ID"))
        body = json.dumps({
            "error": "emulation_stopped",
            "message": f"the AWS emulation {describe_exit(self.emulation_exit_code)}; "
                       "the local runtime is stopping and its state is gone",
        }, separators=(",", ":")).encode()
        start_response("503 Service Unavailable", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("X-Correlation-Id", correlation_id), ("Connection", "close"),
        ])
        return [body]

    def _create(self) -> None:
        client = self.emulation.client
        self.resources = create_resources(self.plan, client, shard_count=self.config.shard_count)
        # moto's SSM takes seconds to load its first time: publish the names off the start-up path.
        threading.Thread(target=self._publish_names, args=(client("ssm"),), name="publish-names",
                         daemon=True).start()
        problems = self.functions.preload()
        if problems:
            raise RuntimeError("; ".join(problems))
        self._sqs = make_client("sqs", self.emulation.endpoint_url, STATUS_CONFIG)  # quick: the status's own
        for mapping in self.plan.mappings:
            if mapping.source_kind == "dynamodb":
                source: Any = DynamoDBStreamSource(client("dynamodbstreams"), mapping.source,
                                                   self.resources.table_stream_arns[mapping.source])
            else:
                source = KinesisSource(client("kinesis"), mapping.source, self.resources.stream_arns[mapping.source])
            function = self.functions[mapping.function]
            self.mappings.append(EventSourceMapping(
                mapping, source, function.invoke, function.plan.arn, self.activity,
                self._dlq_sender(mapping.dlq), self.faults,
            ))
        s3 = client("s3")
        for delivery in self.plan.deliveries:
            source = KinesisSource(client("kinesis"), delivery.stream, self.resources.stream_arns[delivery.stream])
            self.deliveries.append(FirehoseDelivery(
                delivery, source, s3, self.plan.archive_bucket, self.activity,
                interval=self.config.firehose_interval, prefix=self.plan.archive_prefix,
                error_prefix=self.plan.archive_error_prefix, faults=self.faults,
            ))
        for worker in self.workers:
            worker.start()

    def _publish_names(self, ssm: Any) -> None:
        """Where the CLI looks names up (eventstack.resources, source 2), as a deployment does."""
        try:
            from eventstack import resources as names
        except ImportError:  # the CLI's resources module is optional for the runtime
            return
        try:
            self._publish(names, ssm)
        except Exception as exc:  # the CLI still finds the names from the status or the plan
            if self.emulation_died.is_set() or self._stopping:
                return  # said once already, or no longer of use
            log.warning("could not publish resource names to SSM: %s", exc)

    def _publish(self, names: Any, ssm: Any) -> None:
        names.publish(
            names.Resources(
                stage=STAGE,
                archive_bucket=self.plan.archive_bucket,
                tables=dict(self.plan.table_names),
                streams=dict(self.plan.streams),
                dlqs={m.name: m.dlq for m in self.plan.mappings},
                source="local-plan",
            ),
            ssm,
        )

    def _dlq_sender(self, queue: str) -> Callable[[str], None]:
        sqs = self.emulation.client("sqs")

        def send(body: str) -> None:
            sqs.send_message(QueueUrl=self.resources.queue_urls[queue], MessageBody=body)

        return send

    @property
    def workers(self) -> list[PollingWorker]:
        return [*self.mappings, *self.deliveries]

    def stop(self, drain_timeout: float | None = None) -> None:
        """Stop taking requests, let in-flight work finish (up to `drain_timeout`), then stop everything."""
        wait = self.config.drain_on_stop if drain_timeout is None else drain_timeout
        if self.emulation_died.is_set():  # nothing to drain into: only let in-flight requests answer
            wait = min(wait, IN_FLIGHT_GRACE_SECONDS)
        started = time.monotonic()
        if self._http is not None:
            self._http.shutdown()
            self.api.wait_idle(wait)
            self._http.server_close()
            self._http = None
        if wait > 0 and self.workers:
            drained, _ = self.drain(wait)
            log.debug("stop: in-flight work %s after %.1f s", "done" if drained else "NOT done",
                      time.monotonic() - started)
        for worker in self.workers:
            worker.stop()
        if self.pool is not None:
            self.pool.stop()
        self._stopping = True
        self.emulation.stop()
        log.debug("stop: stopped after %.1f s", time.monotonic() - started)
        restore_process_environment(self._previous_env)
        self._previous_env = {}

    # -- what the API server needs (eventstack.local.server.ApiBackend) ------------------------
    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        return self.functions[function].invoke(event)

    def request_done(self) -> None:
        self.activity.notify()

    # -- status and drain --------------------------------------------------------------------
    def _dlq_count(self, queue: str) -> int | None:
        url = self.resources.queue_urls.get(queue)
        if url is None or self._sqs is None or self.emulation_died.is_set():
            return None
        try:
            attributes = self._sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
        except Exception:
            return None
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def status(self) -> dict[str, Any]:
        mappings = []
        answering = True  # one DLQ count unanswered (a stalled emulation): the others are unknown too
        for mapping in self.mappings:
            entry = mapping.status()
            entry["dlq"] = self._dlq_count(mapping.plan.dlq) if answering else None
            answering = answering and entry["dlq"] is not None
            entry["dlq_url"] = self.resources.queue_urls.get(mapping.plan.dlq)
            mappings.append(entry)
        return {
            "stage": STAGE,
            "api_url": self.api_url,
            "aws_endpoint_url": self.aws_endpoint_url,
            "region": "us-east-1",
            "archive_bucket": self.plan.archive_bucket,
            "tables": dict(self.plan.table_names),
            "streams": dict(self.plan.streams),
            "emulation": {
                "pid": self.emulation_pid,
                "running": self.emulation_pid is not None and not self.emulation_died.is_set()
                and not self._stopping,
                "exit_code": self.emulation_exit_code,
            },
            "mappings": mappings,
            "firehose": [d.status() for d in self.deliveries],
            "functions": {
                name: {"invocations": f.invocations, "instances": f.cold_starts,
                       "runs_in": "api workers" if f.remote else "runtime"}
                for name, f in self.functions.functions.items()
            },
            "api_workers": self.pool.status() if self.pool else {"count": 0, "replaced": 0, "workers": [],
                                                                 "deaths": []},
            "faults": {
                **dataclasses.asdict(self.config.faults),
                "duplicated_batches": self.faults.duplicated,
                "crashed_invocations": self.faults.crashed,
            },
        }

    def quiet_since(self, moment: float) -> bool:
        return self.api.in_flight == 0 and all(w.caught_up_since(moment) for w in self.workers)

    def drain(self, timeout: float) -> tuple[bool, dict[str, Any]]:
        """Wait until every source is read empty after the last work anywhere, and every buffer is empty."""
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        self.activity.begin_hurry()
        try:
            while True:
                if self.emulation_died.is_set():  # what was pending is lost with the emulation
                    return False, self.status()
                mark = max(started, self.activity.last)
                if self.quiet_since(mark) and self.activity.last <= mark:
                    return True, self.status()
                if time.monotonic() >= deadline:
                    return False, self.status()
                time.sleep(0.01)
        finally:
            self.activity.end_hurry()

    # -- the command's foreground loop ---------------------------------------------------------
    def banner(self) -> str:
        lines = [
            "eventstack local: the whole stack on this machine (state is in memory; a restart starts empty)",
            f"  API             {self.api_url}   (GET /_local/status, POST /_local/drain)",
            f"  AWS emulation   {self.aws_endpoint_url}",
            "  API functions   " + (f"{self.pool.count} worker processes (--api-workers)" if self.pool
                                     else "in this process"),
            "",
            "  To point the AWS CLI or eventstack's commands at it:",
            # AWS_DEFAULT_REGION too: AWS CLI v1 reads no other (AWS_REGION is the SDKs' and ours)
            f"    export AWS_ENDPOINT_URL={self.aws_endpoint_url} AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 "
            "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing",
            "",
            "  Created:",
            *(f"    {line}" for line in self.resources.created),
        ]
        if self.config.faults.active:
            f = self.config.faults
            lines += ["", f"  Fault injection: duplicates {f.duplicates:g}, crash {f.crash:g}, poller kill "
                          f"{f.poller_kill:g}, Kinesis throttle {f.kinesis_throttle:g}, archive PutObject failure "
                          f"{f.archive_put_failure:g} (retried {f.archive_retry_seconds:g} s)"
                      + (f", seed {f.seed}" if f.seed is not None else "")]
        lines += ["", f"Ready in {self.ready_seconds:.1f} s. Press Ctrl-C to stop."]
        return "\n".join(lines)

    def serve_until_interrupted(self) -> int:
        """Block until SIGINT/SIGTERM, or until the emulation dies; then stop cleanly and return the exit
        code (0, or EXIT_EMULATION_DIED). A second Ctrl-C quits at once."""
        stop = self._wake
        interrupts = []

        def on_signal(signum: int, frame: Any) -> None:
            interrupts.append(signum)
            if len(interrupts) > 1:
                print("\nstopping now", file=sys.stderr, flush=True)
                raise SystemExit(130)
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not stop.wait(0.5):
                pass
            if not self.emulation_died.is_set():
                print("\nstopping: finishing in-flight work (Ctrl-C again to quit at once) ...", file=sys.stderr,
                      flush=True)
            self.stop()
            if self.emulation_died.is_set():  # before the stop, or during its drain
                print(f"eventstack local: stopped because the AWS emulation {describe_exit(self.emulation_exit_code)}; "
                      f"exiting with code {EXIT_EMULATION_DIED}", file=sys.stderr, flush=True)
                return EXIT_EMULATION_DIED
            print("stopped", file=sys.stderr, flush=True)
            return 0
        except SystemExit:  # the second Ctrl-C: no draining, but no worker left behind either
            if self.pool is not None:
                self.pool.kill()
            raise
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
