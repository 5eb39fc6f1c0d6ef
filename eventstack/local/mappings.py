"""Event source mappings, driven as Lambda drives them (DynamoDB Streams and Kinesis).

Per shard, one batch at a time and in order. A batch is delivered when it is full
(`batch_size`), when its first record has waited `batching_window_seconds`, or at once while a
drain waits. Then:
- success: the checkpoint moves past the batch;
- `batchItemFailures` (ReportBatchItemFailures): the checkpoint moves to just before the lowest
  failed record and delivery resumes from it; an unknown or empty identifier fails the whole batch;
- a function error: with bisect on, the batch is split in two and each half delivered in turn;
  a batch that cannot be split (or with bisect off) is retried;
- after `max_retries` failed retries of the same first record, or when records are older than
  `max_record_age_seconds`, the batch's description goes to the mapping's SQS queue in the shape
  AWS gives on-failure destinations, and the checkpoint moves past it.
The checkpoint only ever moves after a batch is done with (processed or sent to the queue).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from eventstack.local.faults import Faults, InjectedCrash, PollerKilled, install_kinesis_throttle
from eventstack.local.plan import MappingPlan
from eventstack.local.sources import (
    IDLE_POLL_SECONDS,
    MAX_IDLE_POLL_SECONDS,
    Activity,
    ShardReader,
    ShardState,
    Source,
    StreamRecord,
)

log = logging.getLogger("eventstack.local")

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # Lambda's synchronous invocation payload limit
RETRY_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 1.0
HURRY_REFRESH_SECONDS = 0.2
POLLER_RESTART_SECONDS = 0.5  # from a poller's death to its successor's start


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class PollingWorker:
    """One thread reading one source; subclasses decide what to do with what was read."""

    def __init__(self, name: str, reader: ShardReader, activity: Activity):
        self.name = name
        self.reader = reader
        self.activity = activity
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._restart: threading.Timer | None = None
        self._thread_lock = threading.Lock()  # the current thread and the pending restart, against stop()
        self.errors = 0
        self.kills = 0  # poller threads that died part-way (faults: poller_kill)
        self.restarts = 0

    def start(self) -> None:
        with self._thread_lock:
            if self._stopping.is_set():
                return
            self._thread = threading.Thread(target=self._run, name=f"poller-{self.name}", daemon=True)
            self._thread.start()

    def signal_stop(self) -> None:
        """Ask the thread to stop after its current round, without waiting (`stop` waits).

        A read or a delivery that fails from then on ends the loop quietly: the runtime signals
        this when the emulation is gone, so the pollers do not log its absence once a round."""
        with self._thread_lock:
            self._stopping.set()
            if self._restart is not None:
                self._restart.cancel()
        self.activity.wake()

    def stop(self, timeout: float = 10.0) -> None:
        self.signal_stop()
        with self._thread_lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- a poller lost and replaced ------------------------------------------------------------
    # When a Lambda poller dies, another takes its shards' leases over and starts from their last
    # checkpoints: what the dead one had read ahead, its iterators, its bisect and retry state are
    # gone, and the batch it was delivering comes again. `_died` is that: the thread has ended; a
    # timer starts a new one, which rewinds every shard to its checkpoint first.
    def _died(self, why: PollerKilled) -> None:
        with self._thread_lock:
            self.kills += 1
            if self._stopping.is_set():
                return
            self._restart = threading.Timer(POLLER_RESTART_SECONDS, self._take_over)
            self._restart.daemon = True
            self._restart.start()
        log.info("%s: poller died (%s); a new one takes over in %.1f s", self.name, why, POLLER_RESTART_SECONDS)

    def _take_over(self) -> None:
        with self._thread_lock:
            if self._stopping.is_set():
                return
            self._restart = None
            self.reader.rewind()
            self.restarts += 1
        self.start()
        self.activity.wake()

    def step(self, now: float) -> float:
        """Deliver what is ready; return the monotonic time this worker next needs to act (inf: never)."""
        raise NotImplementedError

    def tick(self) -> float:
        """One round: refresh shards if due, read every live shard, deliver. Return the next wake time."""
        now = time.monotonic()
        hurry = self.activity.hurry
        if now >= self.reader.next_refresh or (
            hurry and now - self.reader.last_refresh_started >= HURRY_REFRESH_SECONDS
        ):
            self.reader.refresh()
        for state in self.reader.active():
            self.reader.read(state, time.monotonic())
        wake_at = self.step(time.monotonic())
        for state in self.reader.active():
            if self.reader.read_ahead(state) > 0:
                wake_at = min(wake_at, state.next_read_at)
        wake_at = min(wake_at, self.reader.next_refresh)
        if hurry:
            wake_at = min(wake_at, self.reader.last_refresh_started + HURRY_REFRESH_SECONDS)
        return wake_at

    def _run(self) -> None:
        try:
            self._poll()
        except PollerKilled as why:
            self._died(why)

    def _poll(self) -> None:
        seen = self.activity.generation
        while not self._stopping.is_set():
            generation = self.activity.generation
            if generation != seen:
                seen = generation
                self.reader.poke()
            try:
                wake_at = self.tick()
            except Exception as exc:  # the emulation going away at shutdown, a transient error
                if self._stopping.is_set():
                    break
                self.errors += 1
                log.warning("%s: %s: %s", self.name, type(exc).__name__, exc)
                wake_at = time.monotonic() + IDLE_POLL_SECONDS
            timeout = min(wake_at - time.monotonic(), MAX_IDLE_POLL_SECONDS)
            if timeout > 0:
                self.activity.wait(seen, timeout)

    def caught_up_since(self, moment: float) -> bool:
        with self._thread_lock:
            if self._restart is not None:  # dead, its successor not started yet
                return False
        return self.reader.caught_up_since(moment)


class EventSourceMapping(PollingWorker):
    def __init__(
        self,
        plan: MappingPlan,
        source: Source,
        invoke: Callable[[dict[str, Any]], Any],
        function_arn: str,
        activity: Activity,
        send_to_dlq: Callable[[str], None],
        faults: Faults | None = None,
        clock: Callable[[], float] = time.time,
    ):
        settings = plan.settings
        read_ahead = max(settings.batch_size, 1) * 4
        reader = ShardReader(
            source,
            starting_position=settings.starting_position,
            read_ahead=lambda state: read_ahead - len(state.buffer),
        )
        super().__init__(plan.name, reader, activity)
        self.plan = plan
        self.settings = settings
        self.source = source
        self.invoke_function = invoke
        self.function_arn = function_arn
        self.send_to_dlq = send_to_dlq
        self.faults = faults or Faults()
        self.clock = clock
        self.batches = 0
        self.function_errors = 0
        self.partial_failures = 0
        self.dlq_sent = 0
        self.records_done = 0
        if self.faults.settings.kinesis_throttle > 0:
            install_kinesis_throttle()  # before the function's first instance makes its clients

    # -- when is a batch due ----------------------------------------------------------------
    def _due(self, state: ShardState, now: float) -> float:
        """When this shard's next batch may go (inf when nothing is buffered)."""
        if not state.buffer:
            return math.inf
        if state.splits or state.attempts or self.activity.hurry:
            return state.not_before
        if len(state.buffer) >= self.settings.batch_size:
            return state.not_before
        return max(state.not_before, state.buffer[0].read_at + self.settings.batching_window_seconds)

    def step(self, now: float) -> float:
        wake_at = math.inf
        for state in self.reader.active():
            if self._stopping.is_set():
                break
            due = self._due(state, now)
            if due <= now:
                self.deliver(state)
                due = self._due(state, time.monotonic())
            wake_at = min(wake_at, due)
        return wake_at

    # -- one batch ---------------------------------------------------------------------------
    def next_batch(self, state: ShardState) -> list[StreamRecord]:
        limit = state.splits[0] if state.splits else self.settings.batch_size
        batch: list[StreamRecord] = []
        size = 0
        for record in state.buffer:
            if len(batch) >= limit or (batch and size + record.size > MAX_PAYLOAD_BYTES):
                break
            batch.append(record)
            size += record.size
        return batch

    def deliver(self, state: ShardState) -> None:
        batch = self.next_batch(state)
        if not batch:
            return
        started = time.monotonic()
        max_age = self.settings.max_record_age_seconds
        if max_age is not None and max_age >= 0:
            now = self.clock()
            expired = 0
            for record in batch:
                if now - record.arrival <= max_age:
                    break
                expired += 1
            if expired:
                self._discard(state, batch[:expired], "RecordAgeExceeded", error=None)
                self._log(state, batch[:expired], "record age exceeded: sent to the DLQ", started)
                return

        head = batch[0].seq
        injected = False
        error: str | None = None
        lowest_failed: int | None = None
        try:
            result = self.faults.invoke(self._call, batch)
        except InjectedCrash as exc:
            injected, error = True, str(exc)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            lowest_failed = self._lowest_failed(batch, result) if self.settings.report_batch_item_failures else None
            if lowest_failed == -1:
                error = "invalid batchItemFailures"
        finally:
            self.batches += 1
            self.activity.notify()

        if error is None and lowest_failed is None:
            self._complete(state, len(batch))
            state.attempts.pop(head, None)
            self._log(state, batch, "ok", started)
            return

        if error is None and lowest_failed is not None:  # partial failure
            self.partial_failures += 1
            if lowest_failed:
                self._complete(state, lowest_failed)
            remaining = batch[lowest_failed:]
            new_head = remaining[0].seq
            count = state.attempts.get(new_head, 0) + 1
            state.attempts = {new_head: count}
            outcome = f"{len(batch) - lowest_failed} from {remaining[0].sequence_number} reported failed"
            if self._exhausted(count):
                self._discard(state, remaining, "RetryAttemptsExhausted", error=None, attempts=count)
                outcome += ": retries exhausted, sent to the DLQ"
            else:
                state.not_before = time.monotonic() + self._backoff(count)
            self._log(state, batch, outcome, started)
            return

        # a function error
        self.function_errors += 1
        if self.settings.bisect_on_error and len(batch) > 1:
            half = len(batch) // 2
            if state.splits:
                state.splits[0:1] = [half, len(batch) - half]
            else:
                state.splits = [half, len(batch) - half]
            self._log(state, batch, f"error ({error}): bisected into {half} + {len(batch) - half}", started)
            return
        count = state.attempts.get(head, 0) + (0 if injected else 1)
        state.attempts = {head: count}
        if not injected and self._exhausted(count):
            self._discard(state, batch, "RetryAttemptsExhausted", error="Unhandled", attempts=count)
            self._log(state, batch, f"error ({error}): retries exhausted, sent to the DLQ", started)
            return
        state.not_before = time.monotonic() + (0.0 if injected else self._backoff(count))
        self._log(state, batch, f"error ({error}): will retry", started)

    def _call(self, records: Sequence[StreamRecord]) -> Any:
        with self.faults.throttling():
            return self.invoke_function({"Records": [r.event for r in records]})

    @staticmethod
    def _lowest_failed(batch: list[StreamRecord], result: Any) -> int | None:
        """Index of the lowest failed record; None when all succeeded; -1 when the answer is invalid."""
        if not isinstance(result, dict):
            return None
        failures = result.get("batchItemFailures")
        if not failures:
            return None
        if not isinstance(failures, list):
            return -1
        index = {r.sequence_number: i for i, r in enumerate(batch)}
        lowest = None
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if not identifier or identifier not in index:
                return -1  # Lambda treats the whole batch as failed
            lowest = index[identifier] if lowest is None else min(lowest, index[identifier])
        return lowest

    def _exhausted(self, count: int) -> bool:
        retries = self.settings.max_retries
        return retries is not None and retries >= 0 and count > retries

    @staticmethod
    def _backoff(count: int) -> float:
        return min(RETRY_BACKOFF_SECONDS * 2 ** max(count - 1, 0), MAX_BACKOFF_SECONDS)

    def _complete(self, state: ShardState, count: int) -> None:
        self.reader.done(state, count)
        self.records_done += count
        if state.splits:
            state.splits[0] -= count
            if state.splits[0] <= 0:
                state.splits.pop(0)

    def _discard(self, state: ShardState, records: list[StreamRecord], condition: str,
                 error: str | None, attempts: int = 0) -> None:
        self.send_to_dlq(json.dumps(self.failure_message(state, records, condition, error, attempts)))
        self.dlq_sent += 1
        state.attempts = {}
        self._complete(state, len(records))

    def failure_message(self, state: ShardState, records: list[StreamRecord], condition: str,
                        error: str | None, attempts: int) -> dict[str, Any]:
        """The on-failure destination record, shaped as AWS sends it for stream sources."""
        response: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
        if error:
            response["functionError"] = error
        info_key = "KinesisBatchInfo" if self.source.kind == "kinesis" else "DDBStreamBatchInfo"
        return {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self.function_arn,
                "condition": condition,
                "approximateInvokeCount": max(attempts, 1),
            },
            "responseContext": response,
            "version": "1.0",
            "timestamp": iso(self.clock()),
            info_key: {
                "shardId": state.shard_id,
                "startSequenceNumber": records[0].sequence_number,
                "endSequenceNumber": records[-1].sequence_number,
                "approximateArrivalOfFirstRecord": iso(records[0].arrival),
                "approximateArrivalOfLastRecord": iso(records[-1].arrival),
                "batchSize": len(records),
                "streamArn": self.source.arn,
            },
        }

    def _log(self, state: ShardState, batch: list[StreamRecord], outcome: str, started: float) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s: batch of %d [%s..%s] %s (%.0f ms)", self.name, state.shard_id, len(batch),
                      batch[0].sequence_number, batch[-1].sequence_number, outcome,
                      (time.monotonic() - started) * 1000)

    def status(self) -> dict[str, Any]:
        return {
            "name": self.plan.name,
            "source": self.plan.source_label,
            "source_arn": self.source.arn,
            "function": self.plan.function,
            "pending": self.reader.pending(),
            "batches": self.batches,
            "function_errors": self.function_errors,
            "partial_failures": self.partial_failures,
            "records_done": self.records_done,
            "dlq_sent": self.dlq_sent,
            "dlq_name": self.plan.dlq,
            "poller_kills": self.kills,
            "poller_restarts": self.restarts,
        }
