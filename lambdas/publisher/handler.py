"""The publisher: relays an event store's DynamoDB Streams records to the service's Kinesis stream.

For each INSERT of an item with `kind == "event"`, the `envelope` attribute is decoded and put on
Kinesis (data `encode_record(envelope)`, partition key `stream_id`). Everything else (claims,
idempotency records, snapshots, MODIFY and REMOVE records) is skipped and counted.

Order per stream_id is kept under partial failure (docs/decisions.md argues it):
- one PutRecords call carries at most one record per stream_id (PutRecords does not order the
  records of one call, and may fail one while writing the next); a stream's next record is sent
  only once its previous one is acknowledged. Calls are built in rounds: each round sends the
  oldest unsent record of every stream, chunked at 500 records / 5 MiB.
- a failed record is retried in process a few times with backoff (within the invocation's time);
  when it gives up, nothing later of that stream_id is sent in this invocation;
- the response reports the sequence number of the earliest record not published, so Lambda
  re-delivers from there. Records after it that were published are sent again (duplicates,
  which consumers drop by version); nothing is lost and no stream is reordered.
- an undecodable record is not published and blocks its stream the same way (or, if even its
  stream_id is unknown, everything after it).
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from escore.envelope import EnvelopeError, decode, encode_record
from escore.runtime import Handler, aws_client, lazy, require

STREAM_ENV = "EVENT_STREAM_NAME"
MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024
MAX_ATTEMPTS = 4  # per record, in process
SAFETY_MARGIN_MS = 5_000  # stop retrying when the invocation has less time than this left


@dataclass(slots=True)
class _Outgoing:
    sequence: str
    stream_id: str
    data: bytes
    attempts: int = 0

    @property
    def size(self) -> int:
        return len(self.data) + len(self.stream_id.encode())


@dataclass
class PublishResult:
    published: int = 0
    skipped: int = 0
    undecodable: int = 0
    retried: int = 0  # PutRecords record failures retried in process
    unpublished: list[str] = field(default_factory=list)  # DynamoDB stream sequence numbers

    @property
    def first_unpublished(self) -> str | None:
        return min(self.unpublished, key=int) if self.unpublished else None

    def response(self) -> dict[str, Any]:
        first = self.first_unpublished
        return {"batchItemFailures": [] if first is None else [{"itemIdentifier": first}]}


class Publisher:
    def __init__(
        self,
        kinesis: Any,
        stream_name: str,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
        log: Any = None,
    ) -> None:
        self._kinesis = kinesis
        self._stream_name = stream_name
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._log = log

    def publish(self, records: list[dict[str, Any]], remaining_ms: Callable[[], int] | None = None) -> PublishResult:
        result = PublishResult()
        queues: dict[str, deque[_Outgoing]] = {}
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
            queues.setdefault(stream_id, deque()).append(_Outgoing(sequence, stream_id, encode_record(envelope)))

        while True:
            heads = [queue[0] for queue in queues.values() if queue]
            if not heads:
                break
            worst = 0  # the most attempts of a record that failed in this round
            for chunk in _chunks(heads):
                for outgoing, ok in zip(chunk, self._put(chunk), strict=True):
                    queue = queues[outgoing.stream_id]
                    if ok:
                        queue.popleft()
                        result.published += 1
                        continue
                    outgoing.attempts += 1
                    worst = max(worst, outgoing.attempts)
                    if outgoing.attempts >= self._max_attempts:
                        result.unpublished.extend(o.sequence for o in queue)
                        queue.clear()
                    else:
                        result.retried += 1
            if worst:
                if remaining_ms is not None and remaining_ms() < SAFETY_MARGIN_MS:
                    for queue in queues.values():
                        result.unpublished.extend(o.sequence for o in queue)
                        queue.clear()
                    break
                self._sleep(min(0.05 * 2**worst, 1.0) * (0.5 + random.random()))
        return result

    def _put(self, chunk: list[_Outgoing]) -> list[bool]:
        """Whether each record was written. A failed call fails them all (they may have been written:
        a retry then duplicates them, which consumers tolerate; the order stays right)."""
        try:
            response = self._kinesis.put_records(
                StreamName=self._stream_name,
                Records=[{"Data": o.data, "PartitionKey": o.stream_id} for o in chunk],
            )
        except Exception as exc:
            self._warn("PutRecords of %d records failed: %r", len(chunk), exc)
            return [False] * len(chunk)
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


def build(env: Mapping[str, str], *, kinesis: Any = None, sleep: Callable[[float], None] = time.sleep) -> Handler:
    stream_name = require(env, STREAM_ENV)
    from escore.observability import count, logger

    publisher = Publisher(aws_client("kinesis", kinesis), stream_name, sleep=sleep, log=logger)

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        result = publisher.publish(event.get("Records") or [], remaining)
        logger.info(
            "published %d, skipped %d, undecodable %d, retried %d, unpublished %d (from %s)",
            result.published, result.skipped, result.undecodable, result.retried,
            len(result.unpublished), result.first_unpublished,
        )
        count("EventsPublished", result.published)
        count("PublishRetries", result.retried)
        count("RecordsUnpublished", len(result.unpublished))
        return result.response()

    return handle


handler = lazy(build)
