"""The publisher: relays an event store's DynamoDB Streams records to the service's Kinesis stream,
each event once (docs/decisions.md argues it).

For each INSERT of an item with `kind == "event"`, the `envelope` attribute is decoded and put on
Kinesis (data `encode_record(envelope)`, partition key `stream_id`). Everything else (claims,
idempotency records, snapshots, attempt marks, MODIFY and REMOVE records) is skipped and counted.

Order per stream_id:
- one PutRecords call carries at most one record per stream_id (PutRecords does not order the
  records of one call, and may fail one while writing the next); a stream's next record is sent
  only once its previous one is acknowledged (or found on the stream). Calls are built in rounds:
  each round sends the oldest unsent record of every stream, chunked at 500 records / 5 MiB.
- a record failed with an ErrorCode (not written) is retried in process a few times with backoff,
  within the invocation's time; when it gives up, nothing later of that stream_id is sent.
- an undecodable record is not published and blocks its stream the same way (or, if even its
  stream_id is unknown, everything after it).

Each event once on Kinesis (never two copies with two sequence numbers):
- retries always start at the batch's first record: when anything is left unpublished, the response
  reports the batch's FIRST record, and the mapping does not bisect (topology.PUBLISHER_MAPPING), so
  a crash retries the same batch from the same first record too;
- before its first PutRecords, an invocation writes the batch's attempt mark (publisher/marks.py,
  one conditional PutItem). If the mark already exists, an earlier attempt (a crash, a retry,
  `eventstack dlq redrive`) may have published part of the batch: the stream is read back from the
  earlier attempt's start (publisher/readback.py) and the events found there are not sent again;
- botocore never re-sends a PutRecords itself (its retries are off for that client). A call that
  raises (timeout, connection error, 5xx) has an unknown outcome: its records are looked for on the
  stream (read back from the call's start) before any of them is sent again.
A batch that can never be published whole (an undecodable record) fails from its first record until
the mapping's retries run out and it goes to the dead-letter queue; its retries re-send nothing.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from escore.envelope import EnvelopeError, decode, encode_record
from escore.runtime import Handler, aws_client, lazy
from escore.settings import PublisherSettings
from publisher.marks import AttemptMarks
from publisher.readback import Key, ReadBack

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024
MAX_ATTEMPTS = 4  # per record, in process
SAFETY_MARGIN_MS = 5_000  # stop retrying (and reading back) when the invocation has less time left
STALE_SECONDS = 120  # a batch whose first record is older than this is read back even on a first mark


@dataclass(slots=True)
class _Outgoing:
    sequence: str
    stream_id: str
    data: bytes
    version: int = 0
    attempts: int = 0

    @property
    def size(self) -> int:
        return len(self.data) + len(self.stream_id.encode())

    @property
    def key(self) -> Key:
        return self.stream_id, self.version


@dataclass
class PublishResult:
    published: int = 0  # put on Kinesis by this invocation
    skipped: int = 0
    undecodable: int = 0
    retried: int = 0  # PutRecords record failures retried in process
    already_published: int = 0  # found on the stream, put there by an earlier attempt
    unknown_outcomes: int = 0  # PutRecords calls that raised (their records were looked for)
    reattempt: bool = False  # the batch's attempt mark existed
    first_sequence: str | None = None  # the batch's first record (DynamoDB stream sequence number)
    unpublished: list[str] = field(default_factory=list)  # DynamoDB stream sequence numbers

    def give_up(self, queues: Mapping[str, deque[_Outgoing]]) -> None:
        for queue in queues.values():
            self.unpublished.extend(o.sequence for o in queue)
            queue.clear()

    @property
    def failed_from(self) -> str | None:
        """Where the retry starts: the batch's first record, if anything was left unpublished."""
        return self.first_sequence if self.unpublished else None

    def response(self) -> dict[str, Any]:
        first = self.failed_from
        return {"batchItemFailures": [] if first is None else [{"itemIdentifier": first}]}


class Publisher:
    def __init__(
        self,
        kinesis: Any,
        stream_name: str,
        *,
        marks: AttemptMarks,
        reader: ReadBack | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        log: Any = None,
    ) -> None:
        self._kinesis = kinesis
        self._stream_name = stream_name
        self._marks = marks
        self._reader = reader or ReadBack(kinesis, stream_name, sleep=sleep, log=log)
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._clock = clock
        self._log = log

    def publish(self, records: list[dict[str, Any]], remaining_ms: Callable[[], int] | None = None) -> PublishResult:
        result = PublishResult(first_sequence=records[0]["dynamodb"]["SequenceNumber"] if records else None)
        queues, first = self._queue(records, result)
        if first is None:
            return result  # nothing to put: no mark

        def out_of_time() -> bool:
            return remaining_ms is not None and remaining_ms() < SAFETY_MARGIN_MS

        try:
            earlier = self._marks.begin(_event_id(first), fallback_at=_created(first))
            if earlier is None and 0 < _created(first) < self._clock() - STALE_SECONDS:
                # A first mark for records this old: the mapping may have formed a new batch of
                # records an earlier one (other first record) already attempted (records past the
                # maximum age split off, a recreated mapping re-reading the stream). Read back.
                earlier = _created(first)
            if earlier is not None:
                result.reattempt = True
                wanted = {o.key for queue in queues.values() for o in queue}
                self._drop_found(queues, self._reader.find(earlier, wanted, out_of_time), result)
        except Exception as exc:  # the mark or the read-back failed: publish nothing now
            self._warn("attempt mark or read-back failed, nothing published: %r", exc)
            result.give_up(queues)
            return result
        self._send(queues, result, out_of_time)
        return result

    def _queue(self, records: list[dict[str, Any]],
               result: PublishResult) -> tuple[dict[str, deque[_Outgoing]], dict[str, Any] | None]:
        """The records to put, per stream in order, and the first of them (its record)."""
        queues: dict[str, deque[_Outgoing]] = {}
        first: dict[str, Any] | None = None
        blocked: set[str] = set()  # streams with an unpublishable record: nothing later of them is sent
        for index, record in enumerate(records):
            change = record["dynamodb"]
            sequence = change["SequenceNumber"]
            image = change.get("NewImage")
            stream_id = _s(change.get("Keys") or image or {}, "stream_id")
            if (record.get("eventName") != "INSERT"
                    or (image is not None and _s(image, "kind") != "event")
                    or (image is None and stream_id is not None and stream_id.startswith("$"))):
                result.skipped += 1
                continue
            if stream_id in blocked:
                result.unpublished.append(sequence)
                continue
            try:
                if image is None:
                    raise EnvelopeError("the record has no NewImage (the stream must carry new images)")
                envelope = decode(_s(image, "envelope") or "")
                if envelope.stream_id != stream_id or str(envelope.version) != image["version"].get("N"):
                    raise EnvelopeError(f"envelope {envelope.stream_id} v{envelope.version} disagrees with its item")
            except (EnvelopeError, KeyError, AttributeError) as exc:
                self._warn("record %s is not a publishable event: %s", sequence, exc)
                result.undecodable += 1
                result.unpublished.append(sequence)
                if stream_id is None:  # its stream is unknown: hold back everything after it
                    result.unpublished.extend(r["dynamodb"]["SequenceNumber"] for r in records[index + 1:])
                    break
                blocked.add(stream_id)
                continue
            if first is None:
                first = record
            queues.setdefault(stream_id, deque()).append(
                _Outgoing(sequence, stream_id, encode_record(envelope), envelope.version))
        return queues, first

    def _drop_found(self, queues: dict[str, deque[_Outgoing]], found: set[Key], result: PublishResult) -> None:
        for stream_id, queue in queues.items():
            kept = deque(o for o in queue if o.key not in found)
            dropped = len(queue) - len(kept)
            if dropped and any(o.key in found for o in list(queue)[dropped:]):
                self._warn("stream %s: events found on Kinesis after one that is not", stream_id)
            result.already_published += dropped
            queues[stream_id] = kept

    def _send(self, queues: dict[str, deque[_Outgoing]], result: PublishResult,
              out_of_time: Callable[[], bool]) -> None:
        while True:
            heads = [queue[0] for queue in queues.values() if queue]
            if not heads:
                return
            worst = 0  # the most attempts of a record that failed in this round
            unknown: list[_Outgoing] = []
            unknown_since = 0.0
            for chunk in _chunks(heads):
                started = self._clock()
                for outgoing, ok in zip(chunk, self._put(chunk), strict=True):
                    if ok:
                        queues[outgoing.stream_id].popleft()
                        result.published += 1
                    elif ok is None:
                        unknown_since = started if not unknown else min(unknown_since, started)
                        unknown.append(outgoing)
                    else:
                        worst = max(worst, self._failed(outgoing, queues, result))
            if unknown:
                result.unknown_outcomes += 1
                try:
                    found = self._reader.find(unknown_since, {o.key for o in unknown}, out_of_time)
                except Exception as exc:
                    self._warn("read-back after an unknown PutRecords outcome failed: %r", exc)
                    result.give_up(queues)
                    return
                for outgoing in unknown:
                    if outgoing.key in found:
                        queues[outgoing.stream_id].popleft()
                        result.published += 1
                    else:
                        worst = max(worst, self._failed(outgoing, queues, result))
            if worst:
                if out_of_time():
                    result.give_up(queues)
                    return
                self._sleep(min(0.05 * 2**worst, 1.0) * (0.5 + random.random()))

    def _failed(self, outgoing: _Outgoing, queues: dict[str, deque[_Outgoing]], result: PublishResult) -> int:
        """Count a failed attempt (known not written); give up on its stream after the last one."""
        outgoing.attempts += 1
        queue = queues[outgoing.stream_id]
        if outgoing.attempts >= self._max_attempts:
            result.unpublished.extend(o.sequence for o in queue)
            queue.clear()
        else:
            result.retried += 1
        return outgoing.attempts

    def _put(self, chunk: list[_Outgoing]) -> list[bool | None]:
        """Per record: written (True), not written (False: an ErrorCode), or unknown (None: the call
        raised, so it may have written any of them)."""
        try:
            response = self._kinesis.put_records(
                StreamName=self._stream_name,
                Records=[{"Data": o.data, "PartitionKey": o.stream_id} for o in chunk],
            )
        except Exception as exc:
            self._warn("PutRecords of %d records failed, outcome unknown: %r", len(chunk), exc)
            return [None] * len(chunk)
        outcomes = response["Records"]
        if len(outcomes) != len(chunk):
            raise RuntimeError("PutRecords answered for a different number of records")
        return [not entry.get("ErrorCode") for entry in outcomes]

    def _warn(self, message: str, *args: Any) -> None:
        if self._log is not None:
            self._log.warning(message, *args)


def _s(image: Mapping[str, Any], name: str) -> str | None:
    value = image.get(name)
    if isinstance(value, Mapping):
        text = value.get("S")
        return text if isinstance(text, str) else None
    return None


def _event_id(record: Mapping[str, Any]) -> str:
    """The stream record's id (Lambda always sends it; hand-built records may only have a sequence)."""
    event_id = record.get("eventID")
    return str(event_id) if event_id else f"seq-{record['dynamodb']['SequenceNumber']}"


def _created(record: Mapping[str, Any]) -> float:
    """When the record entered the DynamoDB stream: no attempt to publish it can be older."""
    created = record["dynamodb"].get("ApproximateCreationDateTime", 0)
    if hasattr(created, "timestamp"):  # a datetime, as boto3 parses the DynamoDB Streams API's answer
        return float(created.timestamp())
    try:
        return float(created)  # epoch seconds, as Lambda sends it
    except (TypeError, ValueError):
        return 0.0


def _chunks(records: list[_Outgoing]) -> Iterator[list[_Outgoing]]:
    chunk: list[_Outgoing] = []
    size = 0
    for record in records:
        if chunk and (len(chunk) == MAX_RECORDS_PER_CALL or size + record.size > MAX_BYTES_PER_CALL):
            yield chunk
            chunk, size = [], 0
        chunk.append(record)
        size += record.size
    if chunk:
        yield chunk


def kinesis_clients() -> tuple[Any, Any]:
    """(writer, reader): the writer never retries on its own (a re-sent PutRecords whose answer was
    lost would duplicate its records) and gives up on a stuck call in time to read back; the reader
    (GetRecords and friends, safe to repeat) keeps botocore's standard retries."""
    from botocore.config import Config

    # aws_client: the region from AWS_REGION as every handler reads it (boto3 alone ignores AWS_REGION)
    writer = aws_client("kinesis", config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=15))
    reader = aws_client("kinesis", config=Config(retries={"mode": "standard", "total_max_attempts": 5}))
    return writer, reader


def build(
    env: Mapping[str, str],
    *,
    kinesis: Any = None,
    kinesis_reader: Any = None,
    dynamodb: Any = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> Handler:
    """`kinesis` (tests) serves both writing and reading back unless `kinesis_reader` is given."""
    settings = PublisherSettings.from_env(env)
    stream_name, table = settings.event_stream_name, settings.event_store_table
    from escore.observability import count, logger

    if kinesis is None:
        kinesis, default_reader = kinesis_clients()
        kinesis_reader = kinesis_reader or default_reader
    reader = ReadBack(kinesis_reader or kinesis, stream_name, sleep=sleep, log=logger)
    marks = AttemptMarks(aws_client("dynamodb", dynamodb), table, clock=clock)
    publisher = Publisher(kinesis, stream_name, marks=marks, reader=reader, sleep=sleep, clock=clock, log=logger)

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        result = publisher.publish(event.get("Records") or [], remaining)
        logger.info(
            "published %d, already published %d, skipped %d, undecodable %d, retried %d, unknown outcomes %d, "
            "unpublished %d (retry from %s)%s",
            result.published, result.already_published, result.skipped, result.undecodable, result.retried,
            result.unknown_outcomes, len(result.unpublished), result.failed_from,
            ", a re-attempt" if result.reattempt else "",
        )
        count("EventsPublished", result.published)
        count("EventsAlreadyPublished", result.already_published)
        count("PublishRetries", result.retried)
        count("PublishUnknownOutcomes", result.unknown_outcomes)
        count("RecordsUnpublished", len(result.unpublished))
        return result.response()

    return handle


handler = lazy(build)
