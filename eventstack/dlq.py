"""Dead-letter queues of the event source mappings: what they hold, and sending it back.

Lambda's on-failure destination for a stream source does not hold the records: its message (the
shape below, which the local runtime sends too) points at them, by shard and sequence range:

    {"requestContext": {"functionArn", "condition", "approximateInvokeCount", ...},
     "responseContext": {"functionError"?, ...}, "timestamp",
     "KinesisBatchInfo" | "DDBStreamBatchInfo": {"shardId", "startSequenceNumber",
         "endSequenceNumber", "batchSize", "streamArn", "approximateArrivalOfFirstRecord", ...}}

`redrive` re-reads that range from the stream (Kinesis, or the event store's DynamoDB stream), builds
the event Lambda would have delivered, and runs the mapping's own handler code on it in this process
(`build(env)` of the function's module, with the stage's resources): the publisher puts the events on
Kinesis that are not there yet (the batch's attempt mark, left by the mapping's attempts, makes it read
the stream back first: nothing already published is sent again), a projector applies them to the
projection's active table. Both are idempotent (the publisher by its marks, the projector by version),
so a redrive may be repeated.
A message is deleted only when its whole range was read and the handler reported no failure; otherwise
it stays (and becomes visible again after the visibility timeout).

A projector's range is applied exactly once, in a namespace of its own (escore.projection):
`redrive:<stream>:<shard>:<startSequenceNumber>` (the event's `eventstackNamespace` key,
escore.projector_lambda). The shard's own namespace cannot be used: later batches have moved the
shared items' watermarks past the range, whose records were never applied to them (the engine cuts
a batch at its first failed delivery). Owned items are de-duplicated by version whatever the
namespace; shared items by the redrive namespace's watermark, so redriving the same message again
changes nothing. Records a replay has applied since (the table's `$control`/`$coverage` item: per
shard, the position up to which the replay wrote everything) are left out, and a projector's
message is not redriven while a replay holds the table (its control item, escore.control).

Order: redrive the publishers' queues before the projectors' ones: a projector may have failed events
that were waiting for a predecessor the publisher had failed to relay.
Records past the stream's retention (24 h by default) cannot be re-read: such a message is reported
and kept; `eventstack replay` rebuilds the projection from the archive instead.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from escore.control import read_control, read_coverage
from escore.projection import position_of
from escore.projector_lambda import NAMESPACE_KEY, namespace
from escore.settings import ProjectionTable, ProjectorSettings, PublisherSettings
from escore.tables import TableResolver
from eventstack.loader import load_builder
from eventstack.resources import Resources
from eventstack.topology import TOPOLOGY, Topology


@dataclass(frozen=True)
class Failure:
    """One DLQ message, summarised."""

    message_id: str
    receipt_handle: str
    source: str  # "kinesis" | "dynamodb" | "unknown"
    shard_id: str = ""
    start: str = ""
    end: str = ""
    batch_size: int = 0
    stream_arn: str = ""
    condition: str = ""
    function_error: str = ""
    timestamp: str = ""
    attempts: int = 0
    body: str = ""

    def summary(self) -> str:
        if self.source == "unknown":
            return f"{self.message_id}: not a stream-failure record: {self.body[:120]}"
        stream = self.stream_arn.split("/", 1)[-1] if "/" in self.stream_arn else self.stream_arn
        error = f", {self.function_error}" if self.function_error else ""
        return (f"{self.timestamp} {self.condition}{error}: {self.batch_size} record(s) of {stream} "
                f"{self.shard_id} [{self.start}..{self.end}] after {self.attempts} attempt(s)")


def parse(message: dict[str, Any]) -> Failure:
    import json

    body = message.get("Body", "")
    try:
        data = json.loads(body)
        info_key = "KinesisBatchInfo" if "KinesisBatchInfo" in data else "DDBStreamBatchInfo"
        info = data[info_key]
        context = data.get("requestContext", {})
        return Failure(
            message_id=message["MessageId"],
            receipt_handle=message["ReceiptHandle"],
            source="kinesis" if info_key == "KinesisBatchInfo" else "dynamodb",
            shard_id=str(info["shardId"]),
            start=str(info["startSequenceNumber"]),
            end=str(info["endSequenceNumber"]),
            batch_size=int(info.get("batchSize", 0)),
            stream_arn=str(info.get("streamArn", "")),
            condition=str(context.get("condition", "")),
            function_error=str(data.get("responseContext", {}).get("functionError", "") or ""),
            timestamp=str(data.get("timestamp", "")),
            attempts=int(context.get("approximateInvokeCount", 0) or 0),
            body=body,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return Failure(message["MessageId"], message["ReceiptHandle"], "unknown", body=body)


@dataclass
class QueueReport:
    mapping: str
    queue: str
    url: str | None
    visible: int = 0
    in_flight: int = 0
    failures: list[Failure] = field(default_factory=list)


@dataclass
class RedriveReport:
    mapping: str
    redriven: int = 0  # messages whose records were all handled (deleted from the queue)
    kept: int = 0
    records: int = 0
    covered: int = 0  # projector records a replay had applied since: left out
    problems: list[str] = field(default_factory=list)


def _seq(value: str) -> int:
    return int(value)  # Kinesis and DynamoDB Streams sequence numbers are decimal (moto: small ints)


class DeadLetters:
    def __init__(self, resources: Resources, clients: Callable[[str], Any], topology: Topology = TOPOLOGY) -> None:
        self.resources = resources
        self.client = clients
        self.topology = topology
        self.sqs = clients("sqs")
        self.projector_tables: dict[str, str] = {}  # mapping -> the active table its handler writes

    def queue_url(self, queue: str) -> str | None:
        try:
            return str(self.sqs.get_queue_url(QueueName=queue)["QueueUrl"])
        except self.sqs.exceptions.QueueDoesNotExist:
            return None

    def list(self, peek: int = 10) -> list[QueueReport]:
        reports = []
        for mapping, queue in sorted(self.resources.dlqs.items(), key=lambda kv: _order(kv[0])):
            url = self.queue_url(queue)
            report = QueueReport(mapping, queue, url)
            if url is not None:
                attrs = self.sqs.get_queue_attributes(
                    QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
                )["Attributes"]
                report.visible = int(attrs["ApproximateNumberOfMessages"])
                report.in_flight = int(attrs["ApproximateNumberOfMessagesNotVisible"])
                if peek and report.visible:
                    report.failures = list(self._receive(url, peek, visibility=0))
            reports.append(report)
        return reports

    def _receive(self, url: str, limit: int, visibility: int) -> Iterator[Failure]:
        seen: set[str] = set()
        empty_rounds = 0
        while len(seen) < limit and empty_rounds < 2:
            answer = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=min(10, limit - len(seen)),
                                              VisibilityTimeout=visibility, WaitTimeSeconds=0)
            fresh = [m for m in answer.get("Messages", []) if m["MessageId"] not in seen]
            if not fresh:
                empty_rounds += 1
                continue
            for message in fresh:
                seen.add(message["MessageId"])
                yield parse(message)

    # redrive ------------------------------------------------------------------------------------
    def redrive(self, mapping: str, *, limit: int = 1000, dry_run: bool = False) -> RedriveReport:
        queue = self.resources.dlqs.get(mapping)
        if queue is None:
            raise KeyError(f"no mapping {mapping!r}; known: {', '.join(sorted(self.resources.dlqs))}")
        report = RedriveReport(mapping)
        url = self.queue_url(queue)
        if url is None:
            report.problems.append(f"queue {queue} does not exist")
            return report
        handler = None if dry_run else self.handler(mapping)
        for failure in self._receive(url, limit, visibility=0 if dry_run else 300):
            try:
                if failure.source == "unknown":
                    raise ValueError("not a stream-failure record; left in the queue")
                records = self.read_range(failure)
                report.records += len(records)
                if dry_run:
                    report.kept += 1
                    continue
                assert handler is not None
                event: dict[str, Any] | None = {"Records": records}
                table = self.projector_tables.get(mapping)
                if table is not None:
                    event = self.projector_event(failure, records, table)
                    report.covered += len(records) - (len(event["Records"]) if event else 0)
                response = (handler(event, None) or {}) if event else {}
                failed = response.get("batchItemFailures") or []
                if failed:
                    raise RuntimeError(f"{len(failed)} record(s) failed again, from {failed[0].get('itemIdentifier')}")
            except Exception as exc:
                report.kept += 1
                report.problems.append(f"{failure.message_id}: {exc}")
                continue
            self.sqs.delete_message(QueueUrl=url, ReceiptHandle=failure.receipt_handle)
            report.redriven += 1
        return report

    def handler(self, mapping: str) -> Callable[[dict[str, Any], Any], Any]:
        """The mapping's function, built in this process with the stage's resources."""
        for service in self.topology.services:
            if mapping == service.publisher_function_name:
                env = PublisherSettings.environment(
                    service.name, self.resources.event_store_table(service.name), self.resources.stream(service.name)
                )
                built: Callable[[dict[str, Any], Any], Any] = load_builder(service.publisher_handler)(env)
                return built
        for subscription in self.topology.subscriptions:
            if mapping == subscription.name:
                projection = subscription.projection
                pointer = self.resources.pointer_parameter(projection.name)
                located = ProjectionTable.environment(projection.name, self.resources.table(projection.name), pointer)
                active = TableResolver(located, projection.name, ssm_client=self.client("ssm"), cache_seconds=0)()
                self.projector_tables[mapping] = active
                env = {**ProjectorSettings.environment(subscription.owner, projection.folds),
                       **ProjectionTable.environment(projection.name, active, None)}
                built = load_builder(projection.handler)(env)
                return built
        raise KeyError(f"no mapping {mapping!r}")

    def projector_event(self, failure: Failure, records: list[dict[str, Any]], table: str) -> dict[str, Any] | None:
        """The Lambda event that redrives a projector's range into `table`, in the range's own
        namespace, without the records a replay has applied since; None if none is left."""
        dynamodb = self.client("dynamodb")
        held = read_control(dynamodb, table)
        if held is not None and held.active(time.time()):
            raise RuntimeError(f"a replay holds {table} ({held.mode}): redrive once it has finished")
        stream = failure.stream_arn.split("/", 1)[1]
        shard = namespace(stream, failure.shard_id)
        covered = read_coverage(dynamodb, table).get(shard, "")
        left = [r for r in records if position_of(r["kinesis"]["sequenceNumber"]) > covered]
        if not left:
            return None
        return {"Records": left, NAMESPACE_KEY: f"redrive:{shard}:{failure.start}"}

    def read_range(self, failure: Failure) -> list[dict[str, Any]]:
        """The records of [start, end] of the failure's shard, shaped as Lambda delivers them."""
        if failure.source == "kinesis":
            records = list(self._kinesis_range(failure))
        else:
            records = list(self._dynamodb_range(failure))
        if not records or records[0]["_seq"] != _seq(failure.start) or records[-1]["_seq"] != _seq(failure.end):
            raise LookupError(
                f"records {failure.start}..{failure.end} of {failure.shard_id} are no longer in the stream "
                "(past retention?): rebuild with `eventstack replay` instead"
            )
        for record in records:
            del record["_seq"]
        return records

    def _kinesis_range(self, failure: Failure) -> Iterator[dict[str, Any]]:
        kinesis = self.client("kinesis")
        stream = failure.stream_arn.split("/", 1)[1]
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=failure.shard_id, ShardIteratorType="AT_SEQUENCE_NUMBER",
            StartingSequenceNumber=failure.start,
        )["ShardIterator"]
        end = _seq(failure.end)
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            for item in page.get("Records", []):
                number = _seq(item["SequenceNumber"])
                if number > end:
                    return
                arrival = item.get("ApproximateArrivalTimestamp")
                yield {
                    "_seq": number,
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": item["PartitionKey"],
                        "sequenceNumber": item["SequenceNumber"],
                        "data": base64.b64encode(item["Data"]).decode(),
                        "approximateArrivalTimestamp": arrival.timestamp() if isinstance(arrival, datetime) else arrival,
                    },
                    "eventSource": "aws:kinesis",
                    "eventVersion": "1.0",
                    "eventID": f"{failure.shard_id}:{item['SequenceNumber']}",
                    "eventName": "aws:kinesis:record",
                    "eventSourceARN": failure.stream_arn,
                }
            if not page.get("Records") and page.get("MillisBehindLatest", 0) == 0:
                return
            iterator = page.get("NextShardIterator")

    def _dynamodb_range(self, failure: Failure) -> Iterator[dict[str, Any]]:
        streams = self.client("dynamodbstreams")
        iterator = streams.get_shard_iterator(
            StreamArn=failure.stream_arn, ShardId=failure.shard_id, ShardIteratorType="AT_SEQUENCE_NUMBER",
            SequenceNumber=failure.start,
        )["ShardIterator"]
        end = _seq(failure.end)
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            for item in page.get("Records", []):
                number = _seq(item["dynamodb"]["SequenceNumber"])
                if number > end:
                    return
                body = dict(item["dynamodb"])
                created = body.get("ApproximateCreationDateTime")
                if isinstance(created, datetime):
                    body["ApproximateCreationDateTime"] = created.timestamp()
                yield {
                    "_seq": number,
                    "eventID": item.get("eventID"),
                    "eventName": item.get("eventName"),
                    "eventVersion": item.get("eventVersion", "1.1"),
                    "eventSource": "aws:dynamodb",
                    "awsRegion": item.get("awsRegion"),
                    "dynamodb": body,
                    "eventSourceARN": failure.stream_arn,
                }
            if not page.get("Records"):
                return
            iterator = page.get("NextShardIterator")


def _order(mapping: str) -> tuple[int, str]:
    """Publishers first: their failures hold back what the projectors failed."""
    publishers = {service.publisher_function_name for service in TOPOLOGY.services}
    return (0 if mapping in publishers else 1, mapping)
