"""Firehose with a Kinesis source, delivering to the archive bucket (moto delivers nothing from Kinesis).

Reads every shard of the service's stream, buffers by size and by interval, and writes each
buffer as gzip-compressed objects, the records' bytes exactly as published (one envelope and a
newline each), under docs/api.md, "The archive"'s keys:
  events/service=<service>/year=YYYY/month=MM/day=DD/hour=HH/<delivery-stream>-1-<YYYY-MM-DD-HH-MM-SS>-<uuid>.gz
The partition is the record's arrival time; `service` comes from the record itself, as Firehose's
dynamic partitioning (a jq query on `.service`) would take it. A record whose service cannot be
read goes under errors/partitioning-failed/, in Firehose's error-record shape. Records are
checkpointed only once their objects are written: delivery is at least once.

A PutObject that fails (S3 refusing, or the archive_put_failure fault) is retried every
RETRY_SECONDS, the whole buffer again (objects written by the failed attempt are written again:
duplicates, which readers drop by event_id). Once a delivery has failed for `retry_seconds`
(FaultSettings.archive_retry_seconds, default 300 s, the retry duration of a dynamically
partitioned Firehose), the records of the objects still unwritten go under
errors/service=<service>/delivery-failed/<hour partitions>/ in the error-record shape, with S3's
error code, and the buffer moves on: `eventstack archive verify` counts them missing. (A deployed
Firehose with a plain S3 destination retries for up to 24 hours, then drops the data.) If the
error object cannot be written either, delivery blocks and retries, as Firehose's does.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from eventstack.local.faults import Faults, InjectedCrash
from eventstack.local.mappings import PollingWorker
from eventstack.local.plan import DeliveryPlan
from eventstack.local.sources import Activity, ShardReader, StreamRecord, log

BUFFER_BYTES = 1024 * 1024
ERROR_CODE = "DynamicPartitioning.MetadataExtractionFailed"
RETRY_SECONDS = 0.2  # between attempts of a failing delivery
DELIVERY_FAILED = "delivery-failed"  # the error-output-type of records Firehose gave up delivering


@dataclass(eq=False)  # compared by identity: which of this attempt's objects are written
class ArchiveObject:
    """One object of a delivery: its prefix (data or error), partition time, records, body."""

    prefix: str
    moment: datetime
    records: list[StreamRecord]
    body: bytes
    service: str = ""  # "" for an error object


class FirehoseDelivery(PollingWorker):
    def __init__(
        self,
        plan: DeliveryPlan,
        source: Any,
        s3: Any,
        bucket: str,
        activity: Activity,
        *,
        interval: float,
        prefix: str = "events/",
        error_prefix: str = "errors/",
        buffer_bytes: int = BUFFER_BYTES,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.time,
        retry_seconds: float | None = None,
    ):
        reader = ShardReader(source, starting_position="TRIM_HORIZON", read_ahead=self._room)
        super().__init__(plan.name, reader, activity)
        self.plan = plan
        self.s3 = s3
        self.bucket = bucket
        self.interval = interval
        self.prefix = prefix
        self.error_prefix = error_prefix
        self.buffer_bytes = buffer_bytes
        self.faults = faults or Faults()
        self.clock = clock
        self.retry_seconds = self.faults.settings.archive_retry_seconds if retry_seconds is None else retry_seconds
        self.objects = 0
        self.records_delivered = 0
        self.error_records = 0  # records written under the error prefix (unreadable, or given up on)
        self.records_given_up = 0  # of which: records whose delivery failed past retry_seconds
        self.failed_attempts = 0  # deliveries that failed and were tried again
        self.not_before = 0.0
        self._failing_since: float | None = None  # when the current buffer's first delivery failed
        self._unwritten: list[ArchiveObject] = []  # the current attempt's objects not written yet

    def _buffered(self) -> list[tuple[Any, list[StreamRecord]]]:
        return [(s, list(s.buffer)) for s in self.reader.shards.values() if s.buffer]

    def _buffered_bytes(self) -> int:
        return sum(r.size for s in self.reader.shards.values() for r in s.buffer)

    def _room(self, state: Any) -> int:
        return 10000 if self._buffered_bytes() < self.buffer_bytes else 0

    def step(self, now: float) -> float:
        buffered = self._buffered()
        if not buffered:
            return math.inf
        oldest = min(records[0].read_at for _, records in buffered)
        due = oldest + self.interval
        if self.activity.hurry or self._buffered_bytes() >= self.buffer_bytes:
            due = now
        due = max(due, self.not_before)
        if due > now:
            return due
        self.flush(buffered)
        return self.not_before if self._buffered() else math.inf

    def flush(self, buffered: list[tuple[Any, list[StreamRecord]]]) -> None:
        started = time.monotonic()
        records = [r for _, rs in buffered for r in rs]
        objects = self.objects_for(records)
        self._unwritten = list(objects)
        try:
            self.faults.invoke(self._put_all, objects)
        except Exception as exc:  # S3 refused, or a fault: keep the buffer, try again shortly
            if not self._give_up(exc):
                self.failed_attempts += 1
                self.not_before = time.monotonic() + RETRY_SECONDS
                log.debug("%s: delivery failed (%s), will retry", self.name, exc)
                self.activity.notify()
                return
        self._failing_since = None
        for state, rs in buffered:
            self.reader.done(state, len(rs))
        self.records_delivered += len(records)
        self.error_records += sum(len(o.records) for o in objects if not o.service)
        self.activity.notify()
        log.debug("%s: delivered %d records in %d objects (%.0f ms)", self.name, len(records), len(objects),
                  (time.monotonic() - started) * 1000)

    def _give_up(self, exc: Exception) -> bool:
        """Past the retry duration: write what is still unwritten under the error prefix. True once
        that is done (the buffer may move on); False to retry. Injected crashes are transient and
        never count towards the retry duration (as for the mappings' retries)."""
        if isinstance(exc, InjectedCrash):
            return False
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since < self.retry_seconds:
            return False
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
        error = (f"S3.{code}" if code else f"S3.{type(exc).__name__}", str(exc))
        attempts = self.failed_attempts + 1
        given_up = sum(len(o.records) for o in self._unwritten if o.service)
        fallback = []
        for obj in self._unwritten:
            if not obj.service:  # an error object already: as it is
                fallback.append(obj)
                continue
            lines = [self._error_line(r, *error, attempts=attempts) for r in obj.records]
            fallback.append(ArchiveObject(f"{self.error_prefix}service={obj.service}/{DELIVERY_FAILED}/",
                                          obj.moment, obj.records, gzip.compress(b"".join(lines), compresslevel=5)))
        try:
            self._put_all(fallback)
        except Exception as again:
            log.warning("%s: cannot write the error prefix either (%s): delivery blocked, retrying", self.name, again)
            return False
        self.records_given_up += given_up
        self.error_records += given_up
        log.warning("%s: delivery failed for %.0f s (%s): %d records written under %s instead", self.name,
                    now - self._failing_since, error[0], given_up, self.error_prefix)
        return True

    def _put_all(self, objects: Sequence[ArchiveObject]) -> None:
        """Put every object (each names its own key, as Firehose does: a delivery repeated is a
        second object); raise the last failure after trying them all."""
        failure: Exception | None = None
        for obj in objects:
            key = self.object_key(obj.prefix, obj.moment)
            try:
                if obj.service and self.faults.archive_put_fails():
                    raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."},
                                       "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject")
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=obj.body, ContentEncoding="gzip",
                                   ContentType="application/x-ndjson")
            except Exception as exc:
                failure = exc
                continue
            self.objects += 1
            if obj in self._unwritten:
                self._unwritten.remove(obj)
        if failure is not None:
            raise failure

    def object_key(self, prefix: str, moment: datetime) -> str:
        now = datetime.fromtimestamp(self.clock(), UTC)
        return (
            f"{prefix}year={moment:%Y}/month={moment:%m}/day={moment:%d}/hour={moment:%H}/"
            f"{self.plan.name}-1-{now:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}.gz"
        )

    def objects_for(self, records: list[StreamRecord]) -> list[ArchiveObject]:
        """Group by (service, arrival hour); unreadable records go to errors/partitioning-failed/."""
        groups: dict[tuple[str, str], list[StreamRecord]] = defaultdict(list)
        for record in records:
            hour = datetime.fromtimestamp(record.arrival, UTC).strftime("%Y%m%d%H")
            groups[(_service_of(record.data) or "", hour)].append(record)
        out = []
        for (service, _hour), rs in groups.items():
            moment = datetime.fromtimestamp(rs[-1].arrival, UTC)
            if service:
                prefix, lines = f"{self.prefix}service={service}/", [r.data for r in rs]
            else:
                prefix = f"{self.error_prefix}partitioning-failed/"
                lines = [self._error_line(r, ERROR_CODE, _partitioning_message(r.data)) for r in rs]
            out.append(ArchiveObject(prefix, moment, rs, gzip.compress(b"".join(lines), compresslevel=5), service))
        return out

    def _error_line(self, record: StreamRecord, code: str, message: str, attempts: int = 1) -> bytes:
        now_ms = int(self.clock() * 1000)
        shard_id, _, _ = record.event.get("eventID", "").partition(":")
        return (
            json.dumps(
                {
                    "attemptsMade": attempts,
                    "arrivalTimestamp": int(record.arrival * 1000),
                    "errorCode": code,
                    "errorMessage": message,
                    "attemptEndingTimestamp": now_ms,
                    "rawData": base64.b64encode(record.data).decode("ascii"),
                    "subsequenceNumber": 0,
                    "kinesisStreamRecordMetadata": {
                        "shardId": shard_id,
                        "partitionKey": record.event["kinesis"]["partitionKey"],
                        "approximateArrivalTimestamp": int(record.arrival * 1000),
                        "sequenceNumber": record.sequence_number,
                    },
                },
                separators=(",", ":"),
            ).encode()
            + b"\n"
        )

    def status(self) -> dict[str, Any]:
        return {
            "delivery_stream": self.plan.name,
            "source": f"kinesis:{self.plan.stream}",
            "pending": self.reader.pending(),
            "objects": self.objects,
            "records_delivered": self.records_delivered,
            "error_records": self.error_records,
            "records_given_up": self.records_given_up,
            "failed_attempts": self.failed_attempts,
            "archive_puts_failed": self.faults.archive_puts_failed,
            "poller_kills": self.kills,
            "poller_restarts": self.restarts,
        }


def _partitioning_message(data: bytes) -> str:
    if _json(data) is None:
        return "Non JSON record provided"
    return "The record has no string field 'service' to partition by"


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _service_of(data: bytes) -> str | None:
    value = _json(data)
    if isinstance(value, dict) and isinstance(value.get("service"), str) and value["service"]:
        service: str = value["service"]
        if "/" not in service:
            return service
    return None
