"""Replay's reading of the source Kinesis streams: shards, cuts, the records up to a cut, the tail.

- `read_cuts`: per stream and shard, the sequence number of the shard's last record now (a shard
  with no record has no cut). Replay folds each shard up to its cut; the tail applies what follows.
- `read_to_cut`: a shard's records from TRIM_HORIZON up to and including its cut.
- `Tail`: every shard from just after its cut (or from TRIM_HORIZON for a shard without one, or
  created since), in order, parents before children, applied with `Projector.apply` in the shard's
  own namespace (`<stream>:<shard>`, as the live projector), so the two de-duplicate each other.

GetRecords is limited to 5 calls per second per shard, shared with the live mapping and Firehose:
throttled calls are retried with back-off.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from escore.engine import ApplyResult, Delivery, position_of
from escore.envelope import Envelope, EnvelopeError, decode
from escore.projector_lambda import namespace

PAGE_LIMIT = 1000
_THROTTLED = {"ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException"}


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _call(method: Callable[..., Any], **kwargs: Any) -> Any:
    for attempt in range(1, 11):
        try:
            return method(**kwargs)
        except Exception as exc:
            if _code(exc) not in _THROTTLED or attempt == 10:
                raise
            time.sleep(min(0.1 * 2**attempt, 5.0) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def list_shards(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    shards: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"StreamName": stream}
    while True:
        page = _call(kinesis.list_shards, **kwargs)
        shards += page.get("Shards", [])
        token = page.get("NextToken")
        if not token:
            return shards
        kwargs = {"NextToken": token}


def parents_first(shards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_id = {s["ShardId"]: s for s in shards}
    ordered: list[dict[str, Any]] = []
    placed: set[str] = set()

    def place(shard: dict[str, Any]) -> None:
        if shard["ShardId"] in placed:
            return
        placed.add(shard["ShardId"])
        for parent in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")):
            if parent in by_id:
                place(by_id[parent])
        ordered.append(shard)

    for shard in shards:
        place(shard)
    return ordered


def shards_parents_first(kinesis: Any, stream: str) -> list[str]:
    return [s["ShardId"] for s in parents_first(list_shards(kinesis, stream))]


def iterator(kinesis: Any, stream: str, shard_id: str, after: str | None = None, *,
             at: datetime | None = None) -> str | None:
    kwargs: dict[str, Any] = {"StreamName": stream, "ShardId": shard_id}
    if after is not None:
        kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=after)
    elif at is not None:
        kwargs.update(ShardIteratorType="AT_TIMESTAMP", Timestamp=at)
    else:
        kwargs.update(ShardIteratorType="TRIM_HORIZON")
    answer: str | None = _call(kinesis.get_shard_iterator, **kwargs).get("ShardIterator")
    return answer


def pages(kinesis: Any, start: str | None, limit: int = PAGE_LIMIT) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
    """(records, next iterator) pages from `start` up to the shard's tip (or its end, closed)."""
    current = start
    while current:
        page = _call(kinesis.get_records, ShardIterator=current, Limit=limit)
        records = page.get("Records", [])
        following = page.get("NextShardIterator")
        yield records, following
        if not records and (not following or page.get("MillisBehindLatest", 0) == 0):
            return
        current = following


def shard_tip(kinesis: Any, stream: str, shard_id: str, now: datetime | None = None) -> str | None:
    """The sequence number of the shard's last record now; None if it holds none.

    Read from a minute ago, then an hour, then 12 hours, then the whole shard, until a record is
    found: the tip is whatever was read last once the reader is at the end (a clock off by more than
    the window only costs a wider read).
    """
    now = now or datetime.now(UTC)
    for back in (timedelta(minutes=1), timedelta(hours=1), timedelta(hours=12), None):
        start = iterator(kinesis, stream, shard_id, at=now - back if back else None)
        last: str | None = None
        for records, _ in pages(kinesis, start):
            if records:
                last = str(records[-1]["SequenceNumber"])
        if last is not None:
            return last
    return None


def read_cuts(kinesis: Any, streams: list[str]) -> dict[str, dict[str, str]]:
    """stream -> shard id -> the sequence number of its last record now (shards with none are left out)."""
    cuts: dict[str, dict[str, str]] = {}
    for stream in streams:
        mine: dict[str, str] = {}
        for shard_id in shards_parents_first(kinesis, stream):
            tip = shard_tip(kinesis, stream, shard_id)
            if tip is not None:
                mine[shard_id] = tip
        cuts[stream] = mine
    return cuts


def cut_positions(cuts: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """Namespace (`<stream>:<shard>`) -> position of the cut, for every shard with one."""
    return {namespace(stream, shard_id): position_of(seq)
            for stream, shards in cuts.items() for shard_id, seq in shards.items()}


def read_to_cut(kinesis: Any, stream: str, shard_id: str, cut: str) -> Iterator[dict[str, Any]]:
    """The shard's records from TRIM_HORIZON up to and including `cut`."""
    limit = int(cut)
    for records, _ in pages(kinesis, iterator(kinesis, stream, shard_id)):
        for record in records:
            if int(record["SequenceNumber"]) > limit:
                return
            yield record
            if int(record["SequenceNumber"]) == limit:
                return


# --- the tail -------------------------------------------------------------------------------------


@dataclass
class Cursor:
    stream: str
    shard_id: str
    namespace: str
    after: str | None  # the last sequence number applied (None: nothing yet, read from TRIM_HORIZON)
    iterator: str | None = None  # kept between rounds (valid for 5 minutes)
    closed: bool = False  # the listing gives the shard an ending sequence number
    finished: bool = False  # a closed shard read to its end
    failures: int = 0  # rounds in a row that failed at the same record
    stuck: bool = False


class Tail:
    """Applies every shard of `streams` from its start position on, in order; see the module's docstring.

    `start`: namespace -> the sequence number after which the shard is read (a cut, or where a
    previous tail got to); a shard not in it is read from TRIM_HORIZON. `apply` is `Projector.apply`.
    """

    def __init__(
        self,
        kinesis: Any,
        streams: list[str],
        start: Mapping[str, str],
        apply: Callable[[list[Delivery]], ApplyResult],
        *,
        prepare: Callable[[Envelope], Envelope] = lambda event: event,
        on_result: Callable[[ApplyResult, int], None] | None = None,
        on_problem: Callable[[str], None] | None = None,
        on_bad_record: Callable[[str], None] | None = None,
        on_progress: Callable[[], None] | None = None,
        max_failures: int = 5,
        page_limit: int = PAGE_LIMIT,
    ) -> None:
        self.kinesis = kinesis
        self.streams = streams
        self.start = dict(start)
        self.apply = apply
        self.prepare = prepare
        self.on_result = on_result
        self.on_problem = on_problem or (lambda _message: None)
        self.on_bad_record = on_bad_record or self.on_problem
        self.on_progress = on_progress
        self.max_failures = max_failures
        self.page_limit = page_limit
        self.cursors: dict[str, Cursor] = {}

    def positions(self) -> dict[str, str]:
        """Namespace -> position of the last record applied ("" for none), every shard known."""
        return {ns: position_of(c.after) if c.after is not None else "" for ns, c in self.cursors.items()}

    @property
    def stuck(self) -> list[str]:
        return [ns for ns, c in self.cursors.items() if c.stuck]

    def round(self) -> int:
        """Read every shard to its tip once; the number of records applied."""
        applied = 0
        for stream in self.streams:
            shards = parents_first(list_shards(self.kinesis, stream))
            for shard in shards:
                space = namespace(stream, shard["ShardId"])
                if space not in self.cursors:
                    self.cursors[space] = Cursor(stream, shard["ShardId"], space, self.start.get(space))
                self.cursors[space].closed = "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
            for shard in shards:
                parents = [p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p]
                if any(not self._finished(stream, parent) for parent in parents):
                    continue  # a child after its parents, as Lambda reads them
                applied += self._read(self.cursors[namespace(stream, shard["ShardId"])])
        return applied

    def _finished(self, stream: str, shard_id: str) -> bool:
        cursor = self.cursors.get(namespace(stream, shard_id))
        return cursor is None or cursor.finished  # a parent past retention is gone from the listing

    def _read(self, cursor: Cursor) -> int:
        if cursor.finished or cursor.stuck:
            return 0
        applied = 0
        if cursor.iterator is None:
            cursor.iterator = iterator(self.kinesis, cursor.stream, cursor.shard_id, cursor.after)
        try:
            empty = False
            for records, following in pages(self.kinesis, cursor.iterator, self.page_limit):
                if records:
                    done, ok = self._apply(cursor, records)
                    applied += done
                    if not ok:
                        cursor.iterator = None  # read again from the first record not applied
                        return applied
                cursor.iterator, empty = following, not records
                if following is None:
                    cursor.finished = True  # a closed shard read to its end
            if cursor.closed and empty:  # at the tip of a shard that takes no more records
                cursor.finished = True
        except Exception as exc:
            if _code(exc) != "ExpiredIteratorException":
                raise
            cursor.iterator = None
        return applied

    def _apply(self, cursor: Cursor, records: list[dict[str, Any]]) -> tuple[int, bool]:
        deliveries: list[Delivery] = []
        sequence_of: dict[str, str] = {}
        for record in records:
            sequence = str(record["SequenceNumber"])
            try:
                event = self.prepare(decode(record["Data"]))
            except EnvelopeError as exc:  # nobody can apply it (the live mapping dead-lettered it): passed over
                self.on_bad_record(f"{cursor.stream}/{cursor.shard_id} {sequence}: {exc}")
                continue
            deliveries.append(Delivery(event, cursor.namespace, position_of(sequence)))
            sequence_of.setdefault(event.event_id, sequence)
        result = self.apply(deliveries)
        failed = [int(sequence_of[f.event_id]) for f in result.failed if f.event_id in sequence_of]
        if self.on_result is not None:
            self.on_result(result, len(records))
        if not failed:
            cursor.after, cursor.failures = str(records[-1]["SequenceNumber"]), 0
            if self.on_progress is not None:
                self.on_progress()
            return len(records), True
        first = min(failed)
        before = [r for r in records if int(r["SequenceNumber"]) < first]
        if before:
            cursor.after, cursor.failures = str(before[-1]["SequenceNumber"]), 0
            if self.on_progress is not None:
                self.on_progress()
        cursor.failures += 1
        if cursor.failures >= self.max_failures:
            cursor.stuck = True
            reasons = "; ".join(f"{f.stream_id} v{f.version}: {f.reason}" for f in result.failed[:3])
            self.on_problem(f"{cursor.namespace}: the tail cannot get past record {first}: {reasons}")
        return len(before), False
