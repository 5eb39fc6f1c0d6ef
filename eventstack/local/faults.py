"""Fault injection for the stream-driven invocations (event source mappings and Firehose).

- duplicates P: after a batch is delivered, it is delivered again with probability P (Lambda's and
  Firehose's at-least-once delivery). The second delivery's answer is ignored.
- crash P: with probability P an invocation does part of its work and then fails: the handler runs
  on a prefix of the batch (1..n records, so possibly all of it) and the invocation is reported as
  a function error. The mapping then handles it as any function error (bisect, retry).
- poller_kill P: with probability P the poller thread dies part-way through a delivery (the handler
  ran on a prefix of the batch, or Firehose wrote some of its objects) before anything is recorded;
  a new poller thread takes over a moment later from the last checkpoint (`PollingWorker`), as
  Lambda's pollers do when one is lost. `Faults.kill_next()` arms one such kill (tests).
- kinesis_throttle P: each record of a PutRecords call made by a mapping's function (the publisher)
  fails with ProvisionedThroughputExceededException with probability P, and is not written: the
  answer is partial the way Kinesis gives it (FailedRecordCount, an ErrorCode per failed record).
- archive_put_failure P: each PutObject of an archive object (Firehose, under the data prefix) fails
  with S3's 503 SlowDown with probability P (1: an outage). Firehose retries; after
  `archive_retry_seconds` of failing it writes the records under the error prefix instead.

Injected crashes and poller kills model transient failures: they do not use up a mapping's retry
budget, so they never send records to a dead-letter queue. With P < 1 every batch is eventually
delivered whole, which is why projections still end equal to the fold of the unique events.
The HTTP API is never faulted: the contract forbids a 5xx for any client input.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

THROTTLE_CODE = "ProvisionedThroughputExceededException"


class InjectedCrash(RuntimeError):
    """A function error caused by --fault-crash, not by the handler."""


class PollerKilled(BaseException):
    """The poller thread dies here (poller_kill). A BaseException so that no `except Exception` on
    the way (a delivery's error handling, the poll loop's) mistakes it for a failed delivery."""


@dataclass(frozen=True)
class FaultSettings:
    duplicates: float = 0.0
    crash: float = 0.0
    seed: int | None = None
    poller_kill: float = 0.0
    kinesis_throttle: float = 0.0
    archive_put_failure: float = 0.0
    archive_retry_seconds: float = 300.0  # Firehose's default retry duration for a failing S3 prefix

    def __post_init__(self) -> None:
        for name in ("duplicates", "crash", "poller_kill", "kinesis_throttle", "archive_put_failure"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"--fault-{name.replace('_', '-')} must be between 0 and 1, got {value}")
        for name in ("crash", "poller_kill"):
            if getattr(self, name) >= 1.0:
                raise ValueError(f"--fault-{name.replace('_', '-')} must be below 1, or no batch would ever complete")
        if not 0.0 <= self.archive_retry_seconds <= 7200.0:  # Firehose's own bounds for a retry duration
            raise ValueError(f"the archive's retry duration must be 0..7200 s, got {self.archive_retry_seconds}")

    @property
    def active(self) -> bool:
        return any(p > 0 for p in (self.duplicates, self.crash, self.poller_kill, self.kinesis_throttle,
                                   self.archive_put_failure))


class Faults:
    def __init__(self, settings: FaultSettings | None = None):
        self.settings = settings or FaultSettings()
        self._rng = random.Random(self.settings.seed)
        self._lock = threading.Lock()
        self._armed_kills = 0
        self.duplicated = 0
        self.crashed = 0
        self.killed = 0
        self.throttled = 0  # PutRecords records failed
        self.archive_puts_failed = 0

    def chance(self, p: float) -> bool:
        if p <= 0:
            return False
        with self._lock:
            return self._rng.random() < p

    def _prefix_length(self, n: int) -> int:
        with self._lock:
            return self._rng.randint(1, n)

    def kill_next(self, count: int = 1) -> None:
        """The next `count` deliveries kill their poller part-way, whatever poller_kill says."""
        with self._lock:
            self._armed_kills += count

    def _kill_now(self) -> bool:
        with self._lock:
            if self._armed_kills:
                self._armed_kills -= 1
                return True
        return self.chance(self.settings.poller_kill)

    def _part_of(self, call: Callable[[Sequence[T]], Any], batch: Sequence[T]) -> int:
        k = self._prefix_length(len(batch))
        with contextlib.suppress(Exception):  # the failure is what is reported, whatever the prefix did
            call(batch[:k])
        return k

    def invoke(self, call: Callable[[Sequence[T]], Any], batch: Sequence[T]) -> Any:
        """Deliver `batch` through `call`, with the configured faults."""
        if batch and self._kill_now():
            k = self._part_of(call, batch)
            with self._lock:
                self.killed += 1
            raise PollerKilled(f"poller killed after {k} of {len(batch)} records")
        if batch and self.chance(self.settings.crash):
            k = self._part_of(call, batch)
            with self._lock:
                self.crashed += 1
            raise InjectedCrash(f"injected crash after {k} of {len(batch)} records")
        result = call(batch)
        if self.chance(self.settings.duplicates):
            with self._lock:
                self.duplicated += 1
            with contextlib.suppress(Exception):  # a duplicate's outcome is not the batch's
                call(batch)
        return result

    def archive_put_fails(self) -> bool:
        if not self.chance(self.settings.archive_put_failure):
            return False
        with self._lock:
            self.archive_puts_failed += 1
        return True

    @contextlib.contextmanager
    def throttling(self) -> Iterator[None]:
        """While the block runs in this thread, PutRecords calls get partial answers (kinesis_throttle)."""
        if self.settings.kinesis_throttle <= 0:
            yield
            return
        previous = getattr(_throttled, "faults", None)
        _throttled.faults = self
        try:
            yield
        finally:
            _throttled.faults = previous


# -- kinesis_throttle: partial PutRecords answers ------------------------------------------------
# The functions run in this process and make their clients with plain boto3.client(...), i.e. from
# boto3's default session; a client copies the session's event handlers when it is created. So the
# handlers below are registered on that session (before any function instance is built: the
# mappings are created first) and act only in a thread inside `Faults.throttling()`, which a
# mapping enters around each invocation. botocore's events do the splicing, no HTTP proxy:
# - before-parameter-build: draw which records fail and take them out of the request (Kinesis does
#   not write a throttled record);
# - before-call: when every record failed there is nothing to send: answer for Kinesis;
# - after-call: put the failed records back into the answer at their places, with ErrorCode and
#   ErrorMessage, and add them to FailedRecordCount.
_throttled = threading.local()
_CONTEXT_KEY = "eventstack_throttled"
_installed: list[Any] = []
_install_lock = threading.Lock()


def install_kinesis_throttle() -> None:
    """Register the PutRecords handlers on boto3's default session (once per process)."""
    import boto3

    with _install_lock:
        if _installed:
            return
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        events = boto3.DEFAULT_SESSION.events
        events.register("before-parameter-build.kinesis.PutRecords", _drop_throttled,
                        unique_id="eventstack-throttle-params")
        events.register("before-call.kinesis.PutRecords", _answer_all_throttled,
                        unique_id="eventstack-throttle-call")
        events.register("after-call.kinesis.PutRecords", _splice_throttled, unique_id="eventstack-throttle-answer")
        _installed.append(events)


def _error_entry(stream: str) -> dict[str, str]:
    return {"ErrorCode": THROTTLE_CODE,
            "ErrorMessage": f"Rate exceeded for shard in stream {stream} under account 123456789012."}


def _drop_throttled(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    faults: Faults | None = getattr(_throttled, "faults", None)
    records = params.get("Records")
    if faults is None or not isinstance(records, list) or not records:
        return
    failed = [i for i in range(len(records)) if faults.chance(faults.settings.kinesis_throttle)]
    if not failed:
        return
    with faults._lock:
        faults.throttled += len(failed)
    context[_CONTEXT_KEY] = (len(records), failed, str(params.get("StreamName", "")))
    if len(failed) < len(records):  # else the request stays whole (PutRecords needs one record) and is not sent
        dropped = set(failed)
        params["Records"] = [r for i, r in enumerate(records) if i not in dropped]


def _answer_all_throttled(context: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]] | None:
    noted = context.get(_CONTEXT_KEY)
    if noted is None or len(noted[1]) < noted[0]:
        return None
    from botocore.awsrequest import AWSResponse

    total, _failed, stream = noted
    context.pop(_CONTEXT_KEY)
    return (AWSResponse("", 200, {}, None),
            {"FailedRecordCount": total, "Records": [_error_entry(stream) for _ in range(total)],
             "EncryptionType": "NONE", "ResponseMetadata": {"HTTPStatusCode": 200}})


def _splice_throttled(http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    noted = context.pop(_CONTEXT_KEY, None)
    if noted is None or getattr(http_response, "status_code", 500) >= 300:
        return
    total, failed, stream = noted
    written = iter(parsed.get("Records", []))
    dropped = set(failed)
    parsed["Records"] = [_error_entry(stream) if i in dropped else next(written) for i in range(total)]
    parsed["FailedRecordCount"] = int(parsed.get("FailedRecordCount", 0)) + len(failed)
