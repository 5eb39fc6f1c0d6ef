"""Firehose with a Kinesis source, delivering to the archive bucket (moto delivers nothing from Kinesis).

Reads every shard of the service's stream, buffers by size and by interval, and writes each
buffer as gzip-compressed objects, the records' bytes exactly as published (one envelope and a
newline each), under CONTRACT §4's keys:
  events/service=<service>/year=YYYY/month=MM/day=DD/hour=HH/<delivery-stream>-1-<YYYY-MM-DD-HH-MM-SS>-<uuid>.gz
The partition is the record's arrival time; `service` comes from the record itself, as Firehose's
dynamic partitioning (a jq query on `.service`) would take it. A record whose service cannot be
read goes under errors/, in Firehose's error-record shape. Records are checkpointed only once
their objects are written: delivery is at least once.
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
from datetime import UTC, datetime
from typing import Any

from eventstack.local.faults import Faults
from eventstack.local.mappings import PollingWorker
from eventstack.local.plan import DeliveryPlan
from eventstack.local.sources import Activity, ShardReader, StreamRecord, log

BUFFER_BYTES = 1024 * 1024
ERROR_CODE = "DynamicPartitioning.MetadataExtractionFailed"


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
        self.objects = 0
        self.records_delivered = 0
        self.error_records = 0
        self.not_before = 0.0

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
        try:
            self.faults.invoke(self._put_all, objects)
        except Exception as exc:  # S3 refused or a fault: keep the buffer, try again shortly
            self.not_before = time.monotonic() + 0.2
            log.debug("%s: delivery failed (%s), will retry", self.name, exc)
            self.activity.notify()
            return
        for state, rs in buffered:
            self.reader.done(state, len(rs))
        self.records_delivered += len(records)
        self.activity.notify()
        log.debug("%s: delivered %d records in %d objects (%.0f ms)", self.name, len(records), len(objects),
                  (time.monotonic() - started) * 1000)

    def _put_all(self, objects: Sequence[tuple[str, datetime, bytes]]) -> None:
        # Each put names its own object, as Firehose does: a delivery repeated is a second object.
        for prefix, moment, body in objects:
            key = self.object_key(prefix, moment)
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentEncoding="gzip",
                               ContentType="application/x-ndjson")
            self.objects += 1

    def object_key(self, prefix: str, moment: datetime) -> str:
        now = datetime.fromtimestamp(self.clock(), UTC)
        return (
            f"{prefix}year={moment:%Y}/month={moment:%m}/day={moment:%d}/hour={moment:%H}/"
            f"{self.plan.name}-1-{now:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}.gz"
        )

    def objects_for(self, records: list[StreamRecord]) -> list[tuple[str, datetime, bytes]]:
        """Group by (service, arrival hour); unreadable records go to errors/."""
        groups: dict[tuple[str, str], list[bytes]] = defaultdict(list)
        hours: dict[tuple[str, str], datetime] = {}
        for record in records:
            moment = datetime.fromtimestamp(record.arrival, UTC)
            hour = moment.strftime("%Y%m%d%H")
            service = _service_of(record.data)
            if service is None:
                key = ("", hour)
                groups[key].append(self._error_line(record))
                self.error_records += 1
            else:
                key = (service, hour)
                groups[key].append(record.data)
            hours[key] = moment
        out = []
        for (service, _hour), lines in groups.items():
            moment = hours[(service, _hour)]
            if service:
                prefix = f"{self.prefix}service={service}/"
            else:
                prefix = f"{self.error_prefix}partitioning-failed/"
            out.append((prefix, moment, gzip.compress(b"".join(lines), compresslevel=5)))
        return out

    def _error_line(self, record: StreamRecord) -> bytes:
        now_ms = int(self.clock() * 1000)
        shard_id, _, _ = record.event.get("eventID", "").partition(":")
        return (
            json.dumps(
                {
                    "attemptsMade": 1,
                    "arrivalTimestamp": int(record.arrival * 1000),
                    "errorCode": ERROR_CODE,
                    "errorMessage": "Non JSON record provided" if _json(record.data) is None
                    else "The record has no string field 'service' to partition by",
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
        }


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
