"""Rebuilding a projection from the archive, then handing it to the live stream.

`Replayer.run()` does, for one projection (`eventstack replay PROJECTION`):

1. Target. `into="new"`: create a fresh table `<base>-g<UTC timestamp>` with the projection's key
   schema (topology `Projection.table`); readers keep using the active table. `into="in-place"`:
   delete every item of the active table (projector checkpoints included) and rebuild it there.
2. Archive. `ArchiveReader` lists the archive of the projection's source services (pruned by
   `since`/`until`), de-duplicates, orders each stream by version, upcasts; every event is marked
   `metadata.replayed = true` and fed, in batches, to the same `escore.projection.Projector` the live
   Lambda runs (several batches at once: stream-disjoint, one Projector per thread). The projector's
   per-stream version guards make any re-application a no-op.
3. Catch-up. Each source's Kinesis stream is read from TRIM_HORIZON to its tip into the target:
   what the archive does not hold yet (Firehose buffering) is within the stream's retention, and
   what both hold is skipped by version. Nothing between the end of the archive and now is lost or
   applied twice.
4. Switch (`into="new"` only, and only if nothing failed): the projection's active-table pointer
   (SSM, `escore.tables`) is set to the new table. Live projectors and readers resolve the pointer
   with a cache of `TABLE_CACHE_SECONDS`, so for `handoff_seconds` (longer than that) the replay
   keeps tailing the streams into the new table: an event a projector still wrote to the old table
   in that window reaches the new one too. The old table stays (`drop_old`, or `drop_table`, removes it).

Checkpoints (`resume`): the replay's parameters are kept in an SSM parameter
(`/eventstack/<stage>/projections/<name>/replay`: target table, since/until, the last archive key
listed per service, shard count), and each shard's progress in an item of the target table
(`pk = "$replay#<i>/<n>"`): the partitions completed and, inside the current one, the last stream
whose events were all applied. A resumed run lists the same objects (no key after the recorded last
one), skips completed partitions and streams, and re-applies at most one wave of batches, which the
version guards turn into no-ops.

Sharding (`shard=(i, n)`): n workers (laptops, container tasks) each replay the streams of one hash
range into the same target. The first creates the target and the replay record; the others join
it. The worker that finds all n shards complete does the catch-up, the switch and the hand-off.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import orjson

from escore.envelope import Envelope, EnvelopeError, decode
from escore.projection import ApplyResult, ProjectionSpec, Projector
from escore.tables import TABLE_CACHE_SECONDS, table_parameter_name
from escore.upcasting import UpcasterRegistry, upcasters
from eventstack.archive import ArchiveReader, ReadStats, load_upcasters
from eventstack.local.functions import ensure_lambdas_importable
from eventstack.resources import Resources
from eventstack.topology import TOPOLOGY, Projection, Topology

Into = Literal["new", "in-place"]
REPLAYED = "replayed"  # metadata flag: side-effect consumers skip events that carry it
PROGRESS_PK = "$replay#"
PROGRESS_SK = "$progress"
GENERATION_RE = re.compile(r"-g\d{14}$")
HANDOFF_SECONDS = 2 * TABLE_CACHE_SECONDS + 10


class ReplayError(RuntimeError):
    """The replay cannot start or go on (a replay already in progress, a bad option, a failed apply)."""


def is_replayed(event: Envelope) -> bool:
    """True for an event fed by replay: notification-like folds skip their side effects for it."""
    return event.metadata.get(REPLAYED) is True


def mark_replayed(event: Envelope) -> Envelope:
    """The event flagged as replayed (the archive reader sets the flag while decoding, for speed)."""
    return event.with_changes(metadata={**event.metadata, REPLAYED: True})


def load_spec(name: str, topology: Topology = TOPOLOGY) -> ProjectionSpec:
    """The projection's pure fold: `PROJECTION` of the module its Lambda handler lives in."""
    _, projection = topology.projection(name)
    ensure_lambdas_importable()
    module = importlib.import_module(projection.handler.rsplit(".", 1)[0])
    spec = getattr(module, "PROJECTION", None)
    if not isinstance(spec, ProjectionSpec) or spec.name != name:
        raise ReplayError(f"{projection.handler}'s module has no PROJECTION named {name!r}")
    load_upcasters(projection.sources)
    return spec


class Progress(Protocol):
    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, amount: int) -> None: ...

    def note(self, message: str) -> None: ...


class NoProgress:
    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass
class ReplaySummary:
    projection: str
    table: str = ""
    events_read: int = 0  # archive lines + stream records read
    duplicates: int = 0  # dropped by event_id in the archive, or by version in the projector
    applied: int = 0
    skipped: int = 0  # events of types the projection does not read
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # archive gaps, conflicts, bad lines
    switched: bool = False
    waiting_for_shards: int = 0
    seconds: float = 0.0
    archive: ReadStats = field(default_factory=ReadStats)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.problems)

    def line(self) -> str:
        return (
            f"events read: {self.events_read}, duplicates dropped: {self.duplicates}, "
            f"events applied: {self.applied}, seconds: {self.seconds:.1f}"
        )

    def add(self, result: ApplyResult) -> None:
        self.applied += result.applied
        self.skipped += result.skipped
        self.duplicates += result.duplicates
        self.failed += len(result.failed)
        for failure in result.failed[: max(0, 10 - len(self.failures))]:
            self.failures.append(f"{failure.stream_id} v{failure.version}: {failure.reason}")


@dataclass
class ReplayOptions:
    projection: str
    into: Into = "new"
    since: datetime | None = None
    until: datetime | None = None
    resume: bool = False
    abandon: bool = False
    shard: tuple[int, int] = (0, 1)
    batch_size: int = 500  # events per Projector.apply call
    apply_workers: int = 4
    read_workers: int = 8
    memory_budget: int | None = None
    catch_up: bool = True
    handoff_seconds: float = HANDOFF_SECONDS
    drop_old: bool = False
    poll_seconds: float = 0.5


@dataclass
class Clients:
    dynamodb: Any
    s3: Any
    kinesis: Any
    ssm: Any

    @classmethod
    def default(cls) -> Clients:
        from eventstack.resources import client

        return cls(*(client(name) for name in ("dynamodb", "s3", "kinesis", "ssm")))


def replay_parameter_name(stage: str, projection: str) -> str:
    return f"/eventstack/{stage}/projections/{projection}/replay"


class Replayer:
    def __init__(
        self,
        options: ReplayOptions,
        resources: Resources,
        clients: Clients,
        *,
        topology: Topology = TOPOLOGY,
        spec: ProjectionSpec | None = None,
        upcaster: UpcasterRegistry = upcasters,
        progress: Progress | None = None,
        hooks: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.options = options
        self.resources = resources
        self.clients = clients
        self.topology = topology
        _, self.projection = topology.projection(options.projection)
        self.spec = spec or load_spec(options.projection, topology)
        self.upcaster = upcaster
        self.progress = progress or NoProgress()
        self.hooks = hooks or (lambda _phase: None)
        self.clock = clock
        self.summary = ReplaySummary(options.projection)
        self._summary_lock = threading.Lock()
        self._local = threading.local()

    # names --------------------------------------------------------------------------------------
    @property
    def pointer(self) -> str:
        return table_parameter_name(self.resources.stage, self.projection.name)

    @property
    def record_name(self) -> str:
        return replay_parameter_name(self.resources.stage, self.projection.name)

    def initial_table(self) -> str:
        return self.resources.table(self.projection.name)

    def active_table(self) -> str:
        return self._get_parameter(self.pointer) or self.initial_table()

    # the run ------------------------------------------------------------------------------------
    def run(self) -> ReplaySummary:
        started = time.monotonic()
        try:
            if self.options.abandon:
                self._abandon()
                return self.summary
            record = self._begin()
            self.summary.table = record["table"]
            self._replay_archive(record)
            if self._all_shards_done(record):
                self._finish(record)
            else:
                self.summary.waiting_for_shards = self._shards_left(record)
        finally:
            self.summary.seconds = time.monotonic() - started
        return self.summary

    def _begin(self) -> dict[str, Any]:
        """Create (or, resuming or joining a sharded run, load) the replay record and its target."""
        o = self.options
        existing = self._get_parameter(self.record_name)
        if existing is not None:
            record: dict[str, Any] = orjson.loads(existing)
            joinable = o.shard[1] > 1 and record.get("shards") == o.shard[1]
            if not (o.resume or joinable):
                raise ReplayError(
                    f"a replay of {self.projection.name} into {record['table']} ({record['into']}) started "
                    f"at {record['started_at']} is not finished: --resume to continue it, --abandon to drop it"
                )
            if record["into"] != o.into:
                raise ReplayError(f"the replay in progress is --into {record['into']}")
            if record.get("shards", 1) != o.shard[1]:
                raise ReplayError(f"the replay in progress runs with {record.get('shards', 1)} shard(s)")
            if record["into"] == "new" and not self._table_exists(record["table"]):
                if o.resume:  # the first run stopped between recording the replay and creating its table
                    self._create_table(record["table"])
                else:  # joining: the worker that recorded it is creating it
                    self.clients.dynamodb.get_waiter("table_exists").wait(
                        TableName=record["table"], WaiterConfig={"Delay": 2, "MaxAttempts": 150}
                    )
            return record
        if o.resume:
            raise ReplayError(f"no replay of {self.projection.name} to resume")
        now = self.clock()
        active = self.active_table()
        if o.into == "new":
            base = GENERATION_RE.sub("", active)
            table = f"{base}-g{now:%Y%m%d%H%M%S}"
        else:
            table = active
        reader = self._reader()
        max_keys: dict[str, str] = {}
        for service in self.projection.sources:
            objects = reader.list(service, o.since, o.until)
            if objects:
                max_keys[service] = objects[-1].key
        record = {
            "projection": self.projection.name,
            "into": o.into,
            "table": table,
            "previous": active,
            "since": o.since.isoformat() if o.since else None,
            "until": o.until.isoformat() if o.until else None,
            "max_keys": max_keys,
            "shards": o.shard[1],
            "started_at": now.isoformat(),
        }
        created = self._create_parameter(self.record_name, orjson.dumps(record).decode())
        if not created:  # another shard worker got there first: join its record
            return self._begin()
        if o.into == "new":
            self._create_table(table)
        return record

    def _abandon(self) -> None:
        existing = self._get_parameter(self.record_name)
        if existing is None:
            raise ReplayError(f"no replay of {self.projection.name} in progress")
        record = orjson.loads(existing)
        if record["into"] == "new" and record["table"] != self.active_table():
            self._delete_table(record["table"])
            self.progress.note(f"deleted the half-built table {record['table']}")
        self.clients.ssm.delete_parameter(Name=self.record_name)
        self.summary.table = record["table"]

    # archive --------------------------------------------------------------------------------
    def _reader(self) -> ArchiveReader:
        kwargs: dict[str, Any] = {"workers": self.options.read_workers, "upcaster": self.upcaster}
        if self.options.memory_budget:
            kwargs["memory_budget"] = self.options.memory_budget
        return ArchiveReader(self.resources.archive_bucket, self.clients.s3, **kwargs)

    def _replay_archive(self, record: dict[str, Any]) -> None:
        o = self.options
        table = record["table"]
        progress_key = self._progress_key(o.shard)
        state = self._get_progress(table, progress_key)
        if state is None:
            if record["into"] == "in-place":
                self.progress.note(f"emptying {table}")
                self._empty_table(table)
            state = {"done": [], "partitions": None, "current": None, "after": None, "complete": False}
            self._put_progress(table, progress_key, state)
        if state["complete"]:
            self.progress.note(f"shard {o.shard[0]}/{o.shard[1]}: archive already replayed")
            return
        since = datetime.fromisoformat(record["since"]) if record["since"] else None
        until = datetime.fromisoformat(record["until"]) if record["until"] else None
        reader = self._reader()
        objects = []
        for service in self.projection.sources:
            max_key = record["max_keys"].get(service)
            if max_key is not None:
                objects += reader.list(service, since, until, max_key=max_key)
        partitions = state["partitions"] or reader.partitions_for(objects, o.shard)
        state["partitions"] = partitions
        self.progress.phase("reading archive", len(objects))
        stats = self.summary.archive

        def on_scan(what: str, amount: int) -> None:
            if what == "object":
                self.progress.advance(amount)

        parts = reader.read(
            objects,
            shard=o.shard,
            partitions=partitions,
            skip_partitions=state["done"],
            require_start=since is None,
            stats=stats,
            progress=on_scan,
            mark={REPLAYED: True},
        )
        first = True
        dropped = 0
        for partition in parts:
            if first:  # the scan is over: the lines to apply are known
                self.progress.phase("applying", stats.events_read)
                first = False
            streams = partition.streams
            if state["current"] == partition.index and state["after"] is not None:
                streams = [(sid, ev) for sid, ev in streams if sid > state["after"]]
            state["current"] = partition.index
            self._apply_partition(table, streams, state, progress_key)
            state["done"].append(partition.index)
            state["current"], state["after"] = None, None
            self._put_progress(table, progress_key, state)
            now_dropped = stats.duplicates + stats.bad_lines
            self.progress.advance(now_dropped - dropped)  # duplicates count as done on the bar
            dropped = now_dropped
        self.summary.events_read += stats.events_read
        self.summary.duplicates += stats.duplicates
        self.summary.problems += stats.problems()
        if stats.ok and not self.summary.failed:
            state["complete"] = True
            self._put_progress(table, progress_key, state)
        self.hooks("archive-done")

    def _apply_partition(
        self, table: str, streams: Sequence[tuple[str, list[Envelope]]], state: dict[str, Any], progress_key: str
    ) -> None:
        wave = max(1, self.options.apply_workers) * 4
        batches = list(_batches(streams, self.options.batch_size))
        with ThreadPoolExecutor(max_workers=max(1, self.options.apply_workers)) as pool:
            for start in range(0, len(batches), wave):
                chunk = batches[start : start + wave]
                for _ in pool.map(lambda unit: self._apply_in_slices(table, unit[1]), chunk):
                    pass
                state["after"] = chunk[-1][0]
                self._put_progress(table, progress_key, state)
                self.hooks("wave-applied")

    def _apply_in_slices(self, table: str, events: Sequence[Envelope]) -> None:
        size = self.options.batch_size
        for start in range(0, len(events), size):
            self._apply(table, events[start : start + size])

    def _apply(self, table: str, events: Sequence[Envelope]) -> ApplyResult:
        projector: Projector | None = getattr(self._local, "projector", None)
        if projector is None or projector.table_name != table:
            projector = Projector(self.spec, table, self.clients.dynamodb, upcaster=self.upcaster)
            self._local.projector = projector
        result = projector.apply(events)
        with self._summary_lock:
            self.summary.add(result)
        self.progress.advance(len(events))
        return result

    # catch-up, switch, hand-off -----------------------------------------------------------------
    def _finish(self, record: dict[str, Any]) -> None:
        table = record["table"]
        positions: dict[tuple[str, str], str | None] = {}
        if self.options.catch_up:
            self.progress.phase("catching up from the streams", None)
            for service in self.projection.sources:
                stream = self.resources.stream(service)
                positions.update(self._catch_up(table, stream, positions))
        self.hooks("caught-up")
        if not self.summary.ok:
            self.progress.note("not switching: the replay reported problems")
            return
        if record["into"] == "new":
            previous = self.active_table()
            self._put_parameter(self.pointer, table)
            self.summary.switched = True
            self.hooks("switched")
            if self.options.catch_up and self.options.handoff_seconds > 0:
                self.progress.phase("hand-off: tailing the streams", None)
                deadline = time.monotonic() + self.options.handoff_seconds
                for service in self.projection.sources:
                    stream = self.resources.stream(service)
                    positions.update(self._catch_up(table, stream, positions))
                while time.monotonic() < deadline:
                    time.sleep(min(self.options.poll_seconds, max(0.0, deadline - time.monotonic())))
                    for service in self.projection.sources:
                        positions.update(self._catch_up(table, self.resources.stream(service), positions))
            if self.options.drop_old and previous != table:
                if previous == self.initial_table():
                    self.progress.note(f"kept {previous}: it belongs to the deployment")
                else:
                    self._delete_table(previous)
                    self.progress.note(f"dropped {previous}")
        self.clients.ssm.delete_parameter(Name=self.record_name)
        self.hooks("finished")

    def _catch_up(
        self,
        table: str,
        stream: str,
        positions: dict[tuple[str, str], str | None],
    ) -> dict[tuple[str, str], str | None]:
        """Read every shard of `stream` from its saved position (or TRIM_HORIZON) to the tip."""
        kinesis = self.clients.kinesis
        out: dict[tuple[str, str], str | None] = {}
        for shard_id in _shards_parents_first(kinesis, stream):
            key = (stream, shard_id)
            if key in positions:
                iterator = positions[key]
                if iterator is None:  # a closed shard already read to its end
                    out[key] = None
                    continue
            else:
                iterator = kinesis.get_shard_iterator(
                    StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            while iterator:
                page = kinesis.get_records(ShardIterator=iterator, Limit=10000)
                events: list[Envelope] = []
                for item in page.get("Records", []):
                    self.summary.events_read += 1
                    try:
                        event = decode(item["Data"])
                    except EnvelopeError as exc:
                        self.summary.problems.append(f"{stream}/{shard_id} {item['SequenceNumber']}: {exc}")
                        continue
                    events.append(self.upcaster.upcast(mark_replayed(event)))
                self._apply_in_slices(table, events)
                next_iterator = page.get("NextShardIterator")
                if not page.get("Records") and (not next_iterator or page.get("MillisBehindLatest", 0) == 0):
                    iterator = next_iterator
                    break
                iterator = next_iterator
            out[key] = iterator
        return out

    # shards ---------------------------------------------------------------------------------------
    @staticmethod
    def _progress_key(shard: tuple[int, int]) -> str:
        return f"{PROGRESS_PK}{shard[0]}/{shard[1]}"

    def _all_shards_done(self, record: dict[str, Any]) -> bool:
        return self._shards_left(record) == 0

    def _shards_left(self, record: dict[str, Any]) -> int:
        count = int(record.get("shards", 1))
        left = 0
        for index in range(count):
            state = self._get_progress(record["table"], self._progress_key((index, count)))
            if state is None or not state.get("complete"):
                left += 1
        return left

    # DynamoDB -----------------------------------------------------------------------------------
    def _get_progress(self, table: str, key: str) -> dict[str, Any] | None:
        item = self.clients.dynamodb.get_item(
            TableName=table, Key={"pk": {"S": key}, "sk": {"S": PROGRESS_SK}}, ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        state: dict[str, Any] = orjson.loads(item["state"]["S"])
        return state

    def _put_progress(self, table: str, key: str, state: dict[str, Any]) -> None:
        self.clients.dynamodb.put_item(
            TableName=table,
            Item={"pk": {"S": key}, "sk": {"S": PROGRESS_SK}, "state": {"S": orjson.dumps(state).decode()}},
        )

    def _create_table(self, name: str) -> None:
        spec = self.projection.table
        keys = [(spec.partition_key, "HASH")] + ([(spec.sort_key, "RANGE")] if spec.sort_key else [])
        dynamodb = self.clients.dynamodb
        dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": k[0], "KeyType": kind} for k, kind in keys],
            AttributeDefinitions=[{"AttributeName": k[0], "AttributeType": k[1]} for k, _ in keys],
            BillingMode="PAY_PER_REQUEST",
            Tags=[
                {"Key": "eventstack:projection", "Value": self.projection.name},
                {"Key": "eventstack:stage", "Value": self.resources.stage},
                {"Key": "eventstack:built-by", "Value": "replay"},
            ],
        )
        dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 150})
        try:  # as the CDK-managed tables: point-in-time recovery on
            dynamodb.update_continuous_backups(
                TableName=name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )
        except Exception as exc:  # not fatal: the table can be rebuilt from the archive
            self.progress.note(f"point-in-time recovery not enabled on {name}: {exc}")
        self.progress.note(f"created {name}")

    def _empty_table(self, table: str) -> None:
        dynamodb = self.clients.dynamodb
        paginator = dynamodb.get_paginator("scan")
        keys: list[dict[str, Any]] = []
        for page in paginator.paginate(TableName=table, ProjectionExpression="pk, sk"):
            keys.extend(page.get("Items", []))
            while len(keys) >= 25:
                _batch_delete(dynamodb, table, keys[:25])
                del keys[:25]
        if keys:
            _batch_delete(dynamodb, table, keys)

    def _table_exists(self, name: str) -> bool:
        try:
            self.clients.dynamodb.describe_table(TableName=name)
        except self.clients.dynamodb.exceptions.ResourceNotFoundException:
            return False
        return True

    def _delete_table(self, name: str) -> None:
        with contextlib.suppress(self.clients.dynamodb.exceptions.ResourceNotFoundException):
            self.clients.dynamodb.delete_table(TableName=name)

    def drop_table(self, name: str) -> None:
        """Delete a retired table of this projection (never the active one, nor the stack's own)."""
        if name == self.active_table():
            raise ReplayError(f"{name} is the active table of {self.projection.name}")
        if name == self.initial_table():
            raise ReplayError(
                f"{name} belongs to the deployment (CloudFormation or the local runtime): it is left in place"
            )
        if GENERATION_RE.sub("", name) != GENERATION_RE.sub("", self.initial_table()):
            raise ReplayError(f"{name} is not a table of {self.projection.name}")
        self._delete_table(name)
        self.progress.note(f"dropped {name}")

    def tables(self) -> list[tuple[str, bool]]:
        """This projection's tables (the deployed one and the ones replay built), active first."""
        base = GENERATION_RE.sub("", self.initial_table())
        names: list[str] = []
        for page in self.clients.dynamodb.get_paginator("list_tables").paginate():
            names += [n for n in page["TableNames"] if n == base or (n.startswith(base) and GENERATION_RE.search(n))]
        active = self.active_table()
        return sorted(((n, n == active) for n in names), key=lambda t: (not t[1], t[0]))

    # SSM ----------------------------------------------------------------------------------------
    def _get_parameter(self, name: str) -> str | None:
        ssm = self.clients.ssm
        try:
            return str(ssm.get_parameter(Name=name)["Parameter"]["Value"])
        except ssm.exceptions.ParameterNotFound:
            return None

    def _put_parameter(self, name: str, value: str) -> None:
        self.clients.ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)

    def _create_parameter(self, name: str, value: str) -> bool:
        ssm = self.clients.ssm
        try:
            ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=False)
        except ssm.exceptions.ParameterAlreadyExists:
            return False
        return True


def _batches(
    streams: Sequence[tuple[str, list[Envelope]]], size: int
) -> Iterator[tuple[str, list[Envelope]]]:
    """Units of work of about `size` events, whole streams only, each with its last stream id.

    A stream longer than `size` is one unit of its own (applied in slices, in order, by one thread),
    so the progress marker (the last stream id of a unit) only ever names a finished stream.
    """
    batch: list[Envelope] = []
    last = ""
    for stream_id, events in streams:
        if batch and len(batch) + len(events) > size:
            yield last, batch
            batch = []
        batch.extend(events)
        last = stream_id
    if batch:
        yield last, batch


def _batch_delete(dynamodb: Any, table: str, keys: list[dict[str, Any]]) -> None:
    request = {table: [{"DeleteRequest": {"Key": {"pk": k["pk"], "sk": k["sk"]}}} for k in keys]}
    for attempt in range(10):
        answer = dynamodb.batch_write_item(RequestItems=request)
        request = answer.get("UnprocessedItems") or {}
        if not request:
            return
        time.sleep(min(0.05 * 2**attempt, 2.0))
    raise ReplayError(f"emptying {table}: BatchWriteItem kept returning unprocessed items")


def _shards_parents_first(kinesis: Any, stream: str) -> list[str]:
    shards: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"StreamName": stream}
    while True:
        page = kinesis.list_shards(**kwargs)
        shards += page.get("Shards", [])
        token = page.get("NextToken")
        if not token:
            break
        kwargs = {"NextToken": token}
    ids = {s["ShardId"] for s in shards}
    ordered: list[str] = []
    placed: set[str] = set()

    def place(shard: dict[str, Any]) -> None:
        if shard["ShardId"] in placed:
            return
        for parent in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")):
            if parent in ids and parent not in placed:
                place(next(s for s in shards if s["ShardId"] == parent))
        placed.add(shard["ShardId"])
        ordered.append(shard["ShardId"])

    for shard in shards:
        place(shard)
    return ordered


def projection_of(name: str, topology: Topology = TOPOLOGY) -> Projection:
    return topology.projection(name)[1]
