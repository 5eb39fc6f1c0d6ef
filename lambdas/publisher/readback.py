"""Reading back the publisher's own Kinesis stream: which of some events are already on it.

The publisher reads back when it cannot know what an earlier attempt wrote: a batch attempted
before (its attempt mark exists: a crash, a retry, a redrive), or a PutRecords call that raised
(its records may or may not have been written). Every shard is read from a moment known to be
before any write in question (`since`) to its tip, and each record's envelope is decoded into
`(stream_id, version)`, the key the event store gives an event.

Kinesis records become readable shortly after PutRecords returns, so a read-back first waits
`SETTLE_SECONDS`. GetRecords is limited per shard (5 calls/s, 2 MiB/s, shared with every other
consumer of the stream): throttled calls are retried with backoff. A read-back that cannot finish
(too many throttled calls, the invocation running out of time) raises `ReadBackError`: the caller
then publishes nothing more in this invocation, and the batch's next attempt reads back again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from escore.envelope import EnvelopeError, decode

Key = tuple[str, int]  # (stream_id, version)

SETTLE_SECONDS = 1.0
MARGIN_SECONDS = 5.0  # read from this long before the moment in question (clocks, arrival stamps)
MAX_THROTTLED = 8  # consecutive throttled calls before giving up
PAGE_LIMIT = 10_000
THROTTLED = {"ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException"}


class ReadBackError(RuntimeError):
    """The stream could not be read to its tip: what is on it is unknown."""


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


class ReadBack:
    def __init__(
        self,
        kinesis: Any,
        stream_name: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        settle_seconds: float = SETTLE_SECONDS,
        log: Any = None,
    ) -> None:
        self._kinesis = kinesis
        self._stream_name = stream_name
        self._sleep = sleep
        self._settle_seconds = settle_seconds
        self._log = log
        self.reads = 0  # GetRecords calls made (for tests and logs)

    def find(
        self, since: float, wanted: set[Key], out_of_time: Callable[[], bool] | None = None
    ) -> set[Key]:
        """Which of `wanted` are on the stream in records that arrived after `since` - margin."""
        if not wanted:
            return set()
        self._sleep(self._settle_seconds)
        start = datetime.fromtimestamp(max(since - MARGIN_SECONDS, 0.0), UTC)
        found: set[Key] = set()
        for shard_id in self._shards(out_of_time):
            for key in self._read_shard(shard_id, start, out_of_time):
                if key in wanted:
                    found.add(key)
                    if len(found) == len(wanted):
                        return found
        return found

    def _shards(self, out_of_time: Callable[[], bool] | None) -> list[str]:
        shards: list[str] = []
        kwargs: dict[str, Any] = {"StreamName": self._stream_name}
        while True:
            page = self._call(self._kinesis.list_shards, kwargs, out_of_time)
            shards.extend(s["ShardId"] for s in page.get("Shards", []))
            token = page.get("NextToken")
            if not token:
                return shards
            kwargs = {"NextToken": token}

    def _read_shard(
        self, shard_id: str, start: datetime, out_of_time: Callable[[], bool] | None
    ) -> Iterator[Key]:
        iterator = self._iterator(shard_id, out_of_time, Timestamp=start, ShardIteratorType="AT_TIMESTAMP")
        last: str | None = None
        while iterator:
            try:
                page = self._call(self._kinesis.get_records, {"ShardIterator": iterator, "Limit": PAGE_LIMIT},
                                  out_of_time, tolerate={"ExpiredIteratorException"})
            except _Expired:
                position: dict[str, Any] = (
                    {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": last}
                    if last is not None else {"ShardIteratorType": "AT_TIMESTAMP", "Timestamp": start}
                )
                iterator = self._iterator(shard_id, out_of_time, **position)
                continue
            self.reads += 1
            records = page.get("Records", [])
            for record in records:
                last = record["SequenceNumber"]
                try:
                    envelope = decode(record["Data"])
                except EnvelopeError:
                    continue  # not ours to judge: it cannot be one of the events looked for
                yield envelope.stream_id, envelope.version
            if not records and page.get("MillisBehindLatest", 0) == 0:
                return  # at the tip
            iterator = page.get("NextShardIterator")  # None: a closed shard, read to its end

    def _iterator(self, shard_id: str, out_of_time: Callable[[], bool] | None, **position: Any) -> str | None:
        answer = self._call(self._kinesis.get_shard_iterator,
                            {"StreamName": self._stream_name, "ShardId": shard_id, **position}, out_of_time)
        iterator = answer.get("ShardIterator")
        return str(iterator) if iterator else None

    def _call(self, method: Callable[..., Any], kwargs: dict[str, Any], out_of_time: Callable[[], bool] | None,
              tolerate: set[str] | None = None) -> Any:
        throttled = 0
        while True:
            if out_of_time is not None and out_of_time():
                raise ReadBackError("the invocation is running out of time")
            try:
                return method(**kwargs)
            except Exception as exc:
                code = _code(exc)
                if tolerate and code in tolerate:
                    raise _Expired from exc
                if code not in THROTTLED:
                    raise ReadBackError(f"{type(exc).__name__}: {exc}") from exc
                throttled += 1
                if throttled > MAX_THROTTLED:
                    raise ReadBackError(f"throttled {throttled} times in a row") from exc
                if self._log is not None:
                    self._log.warning("read-back throttled (%s), backing off", code)
                self._sleep(min(0.2 * 2 ** (throttled - 1), 2.0) * (0.5 + random.random()))


class _Expired(Exception):
    """GetRecords said the iterator expired (more than 5 minutes old): get a new one."""
