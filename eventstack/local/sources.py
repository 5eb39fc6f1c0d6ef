"""Reading DynamoDB Streams and Kinesis shards as Lambda's pollers do: real boto3 calls against moto.

`ShardReader` is what an event source mapping and a Firehose delivery stream share: it discovers
shards (and resharding), reads ahead into one in-order buffer per shard, starts a child shard only
once its parents are drained, and knows when it has caught up with its source (for drain).

Sequence numbers are compared as integers, never as strings (moto's are small integers).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from eventstack.local.plan import LOCAL_ROLE_ARN, REGION

log = logging.getLogger("eventstack.local")

# An idle shard is read again after IDLE_POLL_SECONDS, doubling up to MAX_IDLE_POLL_SECONDS while it
# stays empty (Lambda reads each shard about once a second). Writes made through the runtime signal
# `Activity`, which brings the next read forward, so latency does not depend on these.
IDLE_POLL_SECONDS = 0.25
MAX_IDLE_POLL_SECONDS = 2.0
MIN_POLL_GAP_SECONDS = 0.05  # never read one shard more often than this
SHARD_REFRESH_SECONDS = 10.0  # how often shard lists are re-read (resharding)


class Activity:
    """Wakes the pollers when something may have written to a source: an API request, a batch.

    Idle pollers wait on it (no busy loop); `last` is when the latest work ended, which drain needs:
    a source is caught up only if it was read empty after the last work anywhere ended.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.generation = 0
        self.last = time.monotonic()
        self._hurry = 0

    def notify(self) -> None:
        with self._cond:
            self.generation += 1
            self.last = time.monotonic()
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake the pollers without recording work (drain uses it)."""
        with self._cond:
            self.generation += 1
            self._cond.notify_all()

    def wait(self, generation: int, timeout: float) -> None:
        with self._cond:
            if self.generation == generation and timeout > 0:
                self._cond.wait(timeout)

    @property
    def hurry(self) -> bool:
        """While a drain waits, batching windows and Firehose buffering intervals are cut short."""
        return self._hurry > 0

    def begin_hurry(self) -> None:
        with self._cond:
            self._hurry += 1
        self.wake()

    def end_hurry(self) -> None:
        with self._cond:
            self._hurry -= 1


@dataclass
class StreamRecord:
    seq: int
    sequence_number: str
    arrival: float  # epoch seconds: Kinesis approximateArrivalTimestamp, DynamoDB ApproximateCreationDateTime
    event: dict[str, Any]  # the record exactly as Lambda puts it in the event's Records
    size: int
    data: bytes = b""  # Kinesis: the record's bytes
    read_at: float = 0.0  # monotonic time the poller read it


@dataclass(frozen=True)
class ShardInfo:
    shard_id: str
    parents: tuple[str, ...]
    closed: bool


class Source(Protocol):
    kind: str  # "kinesis" | "dynamodb"
    arn: str
    name: str

    def list_shards(self) -> list[ShardInfo]: ...

    def iterator(self, shard_id: str, after: int | None, position: str) -> str: ...

    def read(self, shard_id: str, iterator: str, limit: int) -> tuple[list[StreamRecord], str | None]: ...


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    return float(value)


class KinesisSource:
    kind = "kinesis"

    def __init__(self, client: Any, stream_name: str, stream_arn: str):
        self.client = client
        self.name = stream_name
        self.arn = stream_arn

    def list_shards(self) -> list[ShardInfo]:
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamName": self.name}
        while True:
            page = self.client.list_shards(**kwargs)
            shards.extend(page["Shards"])
            token = page.get("NextToken")
            if not token:
                break
            kwargs = {"NextToken": token}
        return [
            ShardInfo(
                s["ShardId"],
                tuple(p for p in (s.get("ParentShardId"), s.get("AdjacentParentShardId")) if p),
                "EndingSequenceNumber" in s.get("SequenceNumberRange", {}),
            )
            for s in shards
        ]

    def iterator(self, shard_id: str, after: int | None, position: str) -> str:
        kwargs: dict[str, Any] = {"StreamName": self.name, "ShardId": shard_id}
        if after is not None:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=str(after))
        else:
            kwargs["ShardIteratorType"] = position
        return str(self.client.get_shard_iterator(**kwargs)["ShardIterator"])

    def read(self, shard_id: str, iterator: str, limit: int) -> tuple[list[StreamRecord], str | None]:
        page = self.client.get_records(ShardIterator=iterator, Limit=min(limit, 10000))
        records = []
        for r in page["Records"]:
            data: bytes = r["Data"]
            arrival = _epoch(r["ApproximateArrivalTimestamp"])
            seq = r["SequenceNumber"]
            event = {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r["PartitionKey"],
                    "sequenceNumber": seq,
                    "data": base64.b64encode(data).decode("ascii"),
                    "approximateArrivalTimestamp": round(arrival, 3),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard_id}:{seq}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": LOCAL_ROLE_ARN,
                "awsRegion": REGION,
                "eventSourceARN": self.arn,
            }
            records.append(StreamRecord(int(seq), seq, arrival, event, len(data) + len(r["PartitionKey"]), data))
        return records, page.get("NextShardIterator")


def _lambda_attribute_value(value: Any) -> Any:
    """boto3 decodes binary attributes to bytes; Lambda's event carries them base64-encoded."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: _lambda_attribute_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lambda_attribute_value(v) for v in value]
    return value


class DynamoDBStreamSource:
    kind = "dynamodb"

    def __init__(self, client: Any, table_name: str, stream_arn: str):
        self.client = client
        self.name = table_name
        self.arn = stream_arn

    def list_shards(self) -> list[ShardInfo]:
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamArn": self.arn}
        while True:
            description = self.client.describe_stream(**kwargs)["StreamDescription"]
            shards.extend(description.get("Shards", []))
            last = description.get("LastEvaluatedShardId")
            if not last:
                break
            kwargs["ExclusiveStartShardId"] = last
        return [
            ShardInfo(
                s["ShardId"],
                (s["ParentShardId"],) if s.get("ParentShardId") else (),
                "EndingSequenceNumber" in s.get("SequenceNumberRange", {}),
            )
            for s in shards
        ]

    def iterator(self, shard_id: str, after: int | None, position: str) -> str:
        kwargs: dict[str, Any] = {"StreamArn": self.arn, "ShardId": shard_id}
        if after is not None:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=str(after))
        else:
            kwargs["ShardIteratorType"] = position
        return str(self.client.get_shard_iterator(**kwargs)["ShardIterator"])

    # moto's TransactWriteItems puts back a deep copy of the whole table when a transaction fails,
    # stream shard included: iterators handed out before then still read the old shard object, which
    # holds the failed transaction's records and never receives another. So every read starts from
    # a fresh iterator (after the last record read), which always reads the table's current shard.
    fresh_iterators = True

    def read(self, shard_id: str, iterator: str, limit: int) -> tuple[list[StreamRecord], str | None]:
        page = self.client.get_records(ShardIterator=iterator, Limit=min(limit, 1000))
        records = []
        for r in page["Records"]:
            ddb = dict(r["dynamodb"])
            arrival = _epoch(ddb["ApproximateCreationDateTime"])
            ddb["ApproximateCreationDateTime"] = int(arrival)
            for image in ("Keys", "NewImage", "OldImage"):
                if image in ddb:
                    ddb[image] = _lambda_attribute_value(ddb[image])
            event = {
                "eventID": r["eventID"],
                "eventName": r["eventName"],
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": REGION,
                "dynamodb": ddb,
                "eventSourceARN": self.arn,
            }
            seq = ddb["SequenceNumber"]
            records.append(StreamRecord(int(seq), seq, arrival, event, int(ddb.get("SizeBytes", 0))))
        return records, page.get("NextShardIterator")


@dataclass
class ShardState:
    info: ShardInfo
    position: str = "TRIM_HORIZON"  # where to start when there is no iterator and nothing read yet
    iterator: str | None = None
    buffer: deque[StreamRecord] = field(default_factory=deque)
    checkpoint: int | None = None  # last sequence number done (processed, or sent to the DLQ)
    last_read_seq: int | None = None
    closed: bool = False
    closed_seen_empty: bool = False
    finished: bool = False  # closed and drained: its children may start
    next_read_at: float = 0.0
    last_read_at: float = 0.0
    caught_up_at: float = -1.0  # start of the latest read that found nothing new
    idle_interval: float = IDLE_POLL_SECONDS
    not_before: float = 0.0  # retry back-off
    attempts: dict[int, int] = field(default_factory=dict)  # head sequence number -> failed invocations
    splits: list[int] = field(default_factory=list)  # bisected batch sizes still to deliver, front first

    @property
    def shard_id(self) -> str:
        return self.info.shard_id


class ShardReader:
    """The shards of one source, read ahead in order, children after their drained parents."""

    def __init__(self, source: Source, *, starting_position: str = "TRIM_HORIZON",
                 read_ahead: Callable[[ShardState], int]):
        self.source = source
        self.starting_position = starting_position
        self.read_ahead = read_ahead
        self.shards: dict[str, ShardState] = {}
        self.last_refresh_started = -1.0
        self.next_refresh = 0.0
        self.lock = threading.Lock()  # guards buffers against the status reader

    # -- discovery -------------------------------------------------------------------------
    def refresh(self) -> None:
        started = time.monotonic()
        listing = self.source.list_shards()
        initial = not self.shards
        for info in listing:
            state = self.shards.get(info.shard_id)
            if state is None:
                # Shards there at start follow the mapping's starting position; children are read whole.
                position = self.starting_position if initial or not info.parents else "TRIM_HORIZON"
                state = ShardState(info, position=position)
                self.shards[info.shard_id] = state
            if info.closed and not state.closed:
                state.closed = True
                state.closed_seen_empty = False
            state.info = info
        self.last_refresh_started = started
        self.next_refresh = time.monotonic() + SHARD_REFRESH_SECONDS

    def active(self) -> list[ShardState]:
        """Shards that may be read now: not finished, and every known parent finished."""
        out = []
        for state in self.shards.values():
            if state.finished:
                continue
            if all(p not in self.shards or self.shards[p].finished for p in state.info.parents):
                out.append(state)
        return out

    # -- reading ---------------------------------------------------------------------------
    def poke(self) -> None:
        """Something may have been written: read soon (but not more often than the minimum gap)."""
        for state in self.shards.values():
            state.idle_interval = IDLE_POLL_SECONDS
            state.next_read_at = min(state.next_read_at, state.last_read_at + MIN_POLL_GAP_SECONDS)

    def read(self, state: ShardState, now: float) -> int:
        """Read what is new on one shard into its buffer; return how many records came."""
        room = self.read_ahead(state)
        if room <= 0 or now < state.next_read_at:
            return 0
        started = time.monotonic()
        if state.iterator is None or getattr(self.source, "fresh_iterators", False):
            state.iterator = self.source.iterator(state.shard_id, state.last_read_seq, state.position)
        try:
            records, next_iterator = self.source.read(state.shard_id, state.iterator, room)
        except Exception as exc:
            if type(exc).__name__ in ("ExpiredIteratorException",) or "Expired" in str(exc):
                state.iterator = None
                return 0
            raise
        state.last_read_at = started
        if records:
            for record in records:
                record.read_at = started
            with self.lock:
                state.buffer.extend(records)
            state.last_read_seq = records[-1].seq
            state.next_read_at = started  # more may be waiting
            state.idle_interval = IDLE_POLL_SECONDS
        else:
            state.caught_up_at = started
            state.next_read_at = started + state.idle_interval
            state.idle_interval = min(state.idle_interval * 2, MAX_IDLE_POLL_SECONDS)
            if state.closed:
                state.closed_seen_empty = True
        state.iterator = next_iterator
        if next_iterator is None:  # AWS: the end of a closed shard
            state.closed = True
            state.closed_seen_empty = not records
        self._maybe_finish(state)
        return len(records)

    def _maybe_finish(self, state: ShardState) -> None:
        if state.closed and state.closed_seen_empty and not state.buffer and not state.finished:
            state.finished = True
            log.debug("%s %s: closed shard drained", self.source.name, state.shard_id)

    def done(self, state: ShardState, count: int) -> list[StreamRecord]:
        """The first `count` buffered records are done: move the checkpoint past them."""
        with self.lock:
            taken = [state.buffer.popleft() for _ in range(min(count, len(state.buffer)))]
        if taken:
            state.checkpoint = taken[-1].seq
        self._maybe_finish(state)
        return taken

    def rewind(self) -> None:
        """Forget everything not checkpointed, as a new poller taking over the shards knows only
        their checkpoints: each shard is read again from just after its checkpoint (a shard with
        none from the mapping's starting position), buffers, iterators, retry and bisect state
        dropped, and the shard list is read again before drain may call the source caught up."""
        with self.lock:
            for state in self.shards.values():
                state.buffer.clear()
                state.iterator = None
                state.last_read_seq = state.checkpoint
                state.next_read_at = 0.0
                state.caught_up_at = -1.0
                state.idle_interval = IDLE_POLL_SECONDS
                state.not_before = 0.0
                state.attempts = {}
                state.splits = []
                if not state.finished:
                    state.closed_seen_empty = False
        self.last_refresh_started = -1.0
        self.next_refresh = 0.0

    # -- observing -------------------------------------------------------------------------
    def pending(self) -> int:
        with self.lock:
            return sum(len(s.buffer) for s in self.shards.values())

    def caught_up_since(self, moment: float) -> bool:
        """Nothing buffered, the shard list re-read, and every live shard read empty after `moment`."""
        if self.last_refresh_started <= moment:
            return False
        for state in self.shards.values():
            if state.finished:
                continue
            if state.buffer:
                return False
            parents_done = all(p not in self.shards or self.shards[p].finished for p in state.info.parents)
            if parents_done and state.caught_up_at <= moment:
                return False
            if not parents_done:
                return False
        return True
