"""Rebuilding a projection from the archive and its stream, then handing it to the live projector.

`Replayer.run()` does, for one projection (`eventstack replay PROJECTION`; docs/replay.md):

1. Record. The archive objects are listed (the last key per service is kept), then, per source
   Kinesis stream and shard, the **cut**: the sequence number of the shard's last record at that
   moment. Every archived event was on the stream before the listing, so it is at or before the cut
   of its shard. The replay record (SSM `/eventstack/<stage>/projections/<name>/replay`) holds the
   parameters; the cuts go into the target table (`$replay#cuts`), read by every worker.
   `into="new"`: a fresh table `<base>-g<UTC timestamp>`. `into="in-place"`: the active table gets
   the `rebuild` control item (escore.control: the live projector writes nothing into it), replay
   waits longer than the gate's cache, then empties it (the control item excepted).
2. Fold, on the record's engine (`ReplayOptions.engine`). "local" (the default): a DuckDB plan of
   the window's events, de-duplicated, bucketed by stream into `files` files, each sorted, then a
   pool of `workers` processes folds each file (eventstack.replay_plan, eventstack.replay_pool,
   escore.replay_file: as described below, in the namespace `replay:<k>/<N>` of the file's bucket,
   a done marker per file). "aws": the same plan on Athena, the files folded by a Step Functions
   Distributed Map of replay-worker Lambdas (eventstack.replay_aws). "scan" (`--shard`, each
   worker `shard=(i, n)`: the streams of the i-th of n hash ranges): the stream's
   records of the worker's streams from TRIM_HORIZON up to each shard's cut, then the archive,
   partition by partition, each stream's archived events followed by those of its stream records
   not in the archive, folded with per-stream state by `escore.rebuild.TableFold` (so events written
   before they carried their folds' facts fold right); what both sources hold is skipped by version.
   Owned items are written after each partition; shared items at the end, in the namespace
   `replay:<i>/<n>`, each marked `_w#<stream>:<shard>` = the cut of every shard. Every worker folds
   up to the same cuts, so every shared item then holds every event up to every cut, as it says.
3. Finish (the worker that finds all n done). The **tail** applies each shard after its cut with
   `Projector.apply` in the shard's own namespace, the live projector's: the two de-duplicate each
   other. Then the hand-off: the control item becomes `handoff` with the tail's positions (the live
   projector writes no batch that starts beyond them), the pointer is switched (`into="new"`), the
   tail goes on for `handoff_seconds` (longer than the table cache), then the table's coverage
   (`$control`/`$coverage`, what `dlq redrive` skips) is written and the control item removed.

Windows: a `since`/`until` that leaves archive objects out (the record's `partial`, counted against a
listing of the whole archive) builds a table holding only the window: `into="new"` does not switch to
it (`summary.withheld`, exit 3) and `into="in-place"` is refused before anything is done, unless
`switch_partial`. A stream record that is not an envelope (dead-lettered live; a Kinesis record cannot
be fixed) is counted and named (`summary.bad_records`) and passed over; it does not block the switch.

Resume: a worker run again re-folds and re-writes; the writes' conditions make what was written a
no-op. Each worker's "done" marker (`$replay#<i>/<n>`) keeps finished workers from running again.

This module orchestrates; the parts are apart: the SSM records (eventstack.replay_record), the
tables and replay's items in them (eventstack.replay_tables), the Kinesis cuts and tail
(eventstack.replay_streams), the worker's fold and the finisher's hand-off (eventstack.replay_work),
and what is reported (eventstack.replay_summary).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from escore import control
from escore.control import GATE_CACHE_SECONDS
from escore.projection import REPLAYED, ProjectionSpec
from escore.tables import TABLE_CACHE_SECONDS
from escore.upcasting import UpcasterRegistry
from eventstack import replay_tables as tables
from eventstack.archive import ArchiveReader
from eventstack.archive_layout import floor_hour
from eventstack.loader import import_lambda_module
from eventstack.replay_record import ReplayRecords
from eventstack.replay_streams import read_cuts
from eventstack.replay_summary import NoProgress, Progress, ReplaySummary
from eventstack.resources import Resources
from eventstack.topology import TOPOLOGY, Topology

# REPLAYED lives in escore.projection; re-exported for bench/replay.py, which imports it from here.
__all__ = ["REPLAYED", "Clients", "ReplayError", "ReplayOptions", "Replayer", "load_spec"]

Into = Literal["new", "in-place"]
Engine = Literal["local", "aws", "scan"]
ENGINES = ("local", "aws", "scan")
HANDOFF_SECONDS = 2 * TABLE_CACHE_SECONDS + 10
# In place, between writing the rebuild control and emptying the table: every gate has read the
# control (its cache), and every batch a gate admitted before has ended (the projector's timeout).
PROJECTOR_TIMEOUT_SECONDS = 60  # infra/functions.py FunctionSpec.timeout_seconds
FENCE_SECONDS = GATE_CACHE_SECONDS + PROJECTOR_TIMEOUT_SECONDS + 5
LEASE_SECONDS = 900.0  # a rebuild control's lease, renewed while the replay works


class ReplayError(RuntimeError):
    """The replay cannot start or go on (a replay already in progress, a bad option, a failed apply)."""


def load_spec(name: str, topology: Topology = TOPOLOGY) -> ProjectionSpec:
    """The projection's pure folds: `PROJECTION` of its folds module (the topology's `Projection.folds`)."""
    _, projection = topology.projection(name)
    spec = getattr(import_lambda_module(projection.folds), "PROJECTION", None)
    if not isinstance(spec, ProjectionSpec) or spec.name != name:
        raise ReplayError(f"{projection.folds} has no PROJECTION named {name!r}")
    return spec


@dataclass
class ReplayOptions:
    projection: str
    into: Into = "new"
    since: datetime | None = None
    until: datetime | None = None
    resume: bool = False
    abandon: bool = False
    shard: tuple[int, int] = (0, 1)
    # where the fold runs: "local" (a DuckDB plan, then `workers` processes over its `files` buckets),
    # "aws" (Athena and Step Functions, eventstack.replay_aws), "scan" (this process reads the whole
    # archive and keeps hash range `shard`). None: "scan" with a `shard` of n > 1, else "local".
    engine: Engine | None = None
    workers: int = 1  # fold processes of the local engine (1: in this process), Map concurrency on AWS
    files: int | None = None  # the plan's bucket count (default from the archive's size, >= workers)
    batch_size: int = 500  # stream records per tail apply (a Kinesis page)
    apply_workers: int = 4  # concurrent item writes
    read_workers: int = 8
    memory_budget: int | None = None
    catch_up: bool = True
    handoff_seconds: float = HANDOFF_SECONDS
    drop_old: bool = False
    switch_partial: bool = False  # switch to (or rebuild in place from) a window that leaves archive objects out
    poll_seconds: float = 1.0  # the tail's pause between reads of the shards' tips
    fence_seconds: float = FENCE_SECONDS
    lease_seconds: float = LEASE_SECONDS
    join_timeout_seconds: float = 600.0  # a joining worker waits this long for the record to be ready


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


class Replayer:
    def __init__(
        self,
        options: ReplayOptions,
        resources: Resources,
        clients: Clients,
        *,
        topology: Topology = TOPOLOGY,
        spec: ProjectionSpec | None = None,
        upcaster: UpcasterRegistry | None = None,
        progress: Progress | None = None,
        hooks: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if options.engine is None:
            options.engine = "scan" if options.shard[1] > 1 else "local"
        if options.engine not in ENGINES:
            raise ReplayError(f"--engine takes {' or '.join(ENGINES[:2])}; got {options.engine!r}")
        if options.engine != "scan" and options.shard[1] > 1:
            raise ReplayError(f"--shard splits the scan engine's work; --engine {options.engine} splits its "
                              "plan into files (--workers)")
        self.options = options
        self.resources = resources
        self.clients = clients
        self.topology = topology
        _, self.projection = topology.projection(options.projection)
        self.spec = spec or load_spec(options.projection, topology)
        self.upcaster = upcaster or self.spec.registry  # the contracts of the classes it folds
        self.progress = progress or NoProgress()
        self.hooks = hooks or (lambda _phase: None)
        self.clock = clock
        self.summary = ReplaySummary(options.projection)

    # names --------------------------------------------------------------------------------------
    @property
    def records(self) -> ReplayRecords:
        """The replay record and the pointer (SSM)."""
        return ReplayRecords(self.clients.ssm, self.resources.stage, self.projection.name)

    @property
    def streams(self) -> list[str]:
        return [self.resources.stream(service) for service in self.projection.sources]

    def initial_table(self) -> str:
        return self.resources.table(self.projection.name)

    def active_table(self) -> str:
        return self.records.pointed() or self.initial_table()

    # the run ------------------------------------------------------------------------------------
    def run(self) -> ReplaySummary:
        from eventstack.replay_work import Finisher

        started = time.monotonic()
        try:
            if self.options.abandon:
                self._abandon()
                return self.summary
            record = self._begin()
            self.summary.table = table = record["table"]
            cuts = self.cuts(record)
            with self._lease(record):
                if tables.get_state(self.clients.dynamodb, table, tables.done_key(self.options.shard)) is None:
                    if not self._fold(record, cuts):
                        return self.summary  # problems: no done marker, nothing switched
                else:
                    self.progress.note(f"shard {self.options.shard[0]}/{self.options.shard[1]}: already done")
                left = self._shards_left(record)
                if left:
                    self.summary.waiting_for_shards = left
                    return self.summary
                if not tables.put_state(self.clients.dynamodb, table, tables.CLAIM,
                                        {"shard": list(self.options.shard)}, only_new=True) and not self.options.resume:
                    self.progress.note("every shard is done; another worker is finishing (--resume to take over)")
                    return self.summary
                Finisher(self, record, cuts).run()
        finally:
            self.summary.seconds = time.monotonic() - started
        return self.summary

    def _fold(self, record: dict[str, Any], cuts: dict[str, dict[str, str]]) -> bool:
        """The fold phase, on the record's engine; True (and the done marker) if nothing went wrong."""
        from eventstack.replay_work import Worker

        engine = record.get("engine", "scan")
        if engine == "scan":
            return Worker(self, record, cuts).run()
        if engine == "aws":
            try:
                from eventstack import replay_aws  # type: ignore[attr-defined, unused-ignore]
            except ImportError:
                raise ReplayError("--engine aws is not available in this version (eventstack.replay_aws is "
                                  "missing): use --engine local") from None
            done = bool(replay_aws.run_map(self, record, cuts, workers=self.options.workers))
        else:
            from eventstack.replay_pool import run_local

            done = run_local(self, record, cuts)
        if done:
            tables.put_state(self.clients.dynamodb, record["table"], tables.done_key((0, 1)),
                             {"events": self.summary.applied + self.summary.skipped, "items": self.summary.written})
        return done

    def cuts(self, record: dict[str, Any]) -> dict[str, dict[str, str]]:
        state = tables.get_state(self.clients.dynamodb, record["table"], tables.CUTS)
        if state is None:
            raise ReplayError(f"the replay into {record['table']} has no cuts: --abandon it")
        return {stream: dict(shards) for stream, shards in state["cuts"].items()}

    def _begin(self) -> dict[str, Any]:
        """Create (or, resuming or joining a sharded run, load) the replay record and its target."""
        o = self.options
        record = self.records.load()
        if record is not None:
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
            if record.get("engine", "scan") != o.engine:
                raise ReplayError(f"the replay in progress runs on --engine {record.get('engine', 'scan')}")
            if record.get("phase") != "building":
                if o.resume and tuple(record.get("creator", (0, 1))) == o.shard:
                    self._prepare(record)  # the worker that recorded it stopped while preparing
                else:
                    record = self._wait_until_ready()
            if record["into"] == "in-place":
                self._check_fence(record)
            return record
        if o.resume:
            raise ReplayError(f"no replay of {self.projection.name} to resume")
        now = self.clock()
        active = self.active_table()
        table = tables.new_generation(active, now) if o.into == "new" else active
        reader = self._reader()
        max_keys: dict[str, str] = {}
        listed = 0  # compressed bytes in the window
        left_out = 0  # archive objects outside the window
        first = floor_hour(o.since) if o.since else None
        for service in self.projection.sources:  # listed before the cuts are read: archived <= cut
            every = reader.list(service)
            objects = [obj for obj in every if not ((first is not None and obj.hour < first)
                                                    or (o.until is not None and obj.hour >= o.until))]
            left_out += len(every) - len(objects)  # (the reader's own window, ArchiveReader.list)
            listed += sum(obj.size for obj in objects)
            if objects:
                max_keys[service] = objects[-1].key
        partial = left_out > 0
        if partial and o.into == "in-place" and not o.switch_partial:
            raise ReplayError(
                f"the window ({_window(o)}) leaves {left_out} archive object(s) out: rebuilt in place, "
                f"{active} would hold only the window; nothing was done. Replay --into new (readers are not "
                "switched to a partial table), or pass --switch-partial if the window determines every item"
            )
        record = {
            "projection": self.projection.name, "into": o.into, "table": table, "previous": active,
            "since": o.since.isoformat() if o.since else None, "until": o.until.isoformat() if o.until else None,
            "max_keys": max_keys, "shards": o.shard[1], "started_at": now.isoformat(),
            "phase": "preparing", "creator": list(o.shard), "catch_up": o.catch_up,
            "partial": left_out, "switch_partial": o.switch_partial, "engine": o.engine,
        }
        if o.engine != "scan":
            from eventstack.replay_plan import default_files

            record["files"] = o.files or default_files(listed, o.workers)
        if not self.records.create(record):
            return self._begin()  # another shard worker got there first: join its record
        self._prepare(record)
        return record

    def _prepare(self, record: dict[str, Any]) -> None:
        """The target made ready (created, or fenced and emptied), the cuts fixed; then `building`."""
        dynamodb, table = self.clients.dynamodb, record["table"]
        if record["into"] == "new":
            if not tables.table_exists(dynamodb, table):
                for note in tables.create_generation(dynamodb, table, self.projection, self.resources.stage):
                    self.progress.note(note)
                self.progress.note(f"created {table}")
        else:
            control.put_rebuild(dynamodb, table, time.time() + self.options.lease_seconds)
            self.hooks("fenced")
            self.progress.note(f"{table}: the live projector is held back; emptying it in {self.options.fence_seconds:.0f} s")
            time.sleep(self.options.fence_seconds)  # every gate has seen the control item
            tables.empty_table(dynamodb, table)
        if tables.get_state(dynamodb, table, tables.CUTS) is None:
            cuts = read_cuts(self.clients.kinesis, self.streams) if record.get("catch_up", True) else {}
            tables.put_state(dynamodb, table, tables.CUTS, {"cuts": cuts}, only_new=True)
        record["phase"] = "building"
        self.records.save(record)
        self.hooks("recorded")

    def _wait_until_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.options.join_timeout_seconds
        while True:
            record = self.records.load()
            if record is None:
                raise ReplayError(f"the replay of {self.projection.name} was abandoned")
            if record.get("phase") == "building":
                return record
            if time.monotonic() > deadline:
                raise ReplayError("the replay record is still being prepared by its first worker "
                                  "(if it died, run its command again with --resume)")
            time.sleep(self.options.poll_seconds)

    def _check_fence(self, record: dict[str, Any]) -> None:
        """In place: the live projector must have been held back since the table was emptied."""
        table = record["table"]
        held = control.read_control(self.clients.dynamodb, table)
        if held is None:
            if tables.get_state(self.clients.dynamodb, table, tables.CLAIM) is not None:
                return  # handed off already: what is left is the clean-up
            raise ReplayError(f"{table} has no control item: the live projector may have written into the "
                              "half-built table; --abandon, then replay again")
        if held.mode == "rebuild" and not held.active(time.time()):
            raise ReplayError(f"the hold on {table}'s live projector lapsed at "
                              f"{datetime.fromtimestamp(held.until, UTC):%Y-%m-%d %H:%M:%S} UTC: it may have "
                              "written into the half-built table; --abandon, then replay again")

    @contextlib.contextmanager
    def _lease(self, record: dict[str, Any]) -> Iterator[None]:
        """While this worker runs, renew the in-place rebuild's hold on the live projector."""
        if record["into"] != "in-place":
            yield
            return
        stop = threading.Event()
        every = max(1.0, self.options.lease_seconds / 3)

        def renew() -> None:
            while not stop.wait(every):
                with contextlib.suppress(Exception):  # the next round tries again
                    control.renew(self.clients.dynamodb, record["table"], "rebuild",
                                  time.time() + self.options.lease_seconds)

        thread = threading.Thread(target=renew, name="replay-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def _abandon(self) -> None:
        record = self.records.load()
        if record is None:
            raise ReplayError(f"no replay of {self.projection.name} in progress")
        dynamodb, table = self.clients.dynamodb, record["table"]
        if record["into"] == "new" and table != self.active_table():
            tables.delete_table(dynamodb, table)
            self.progress.note(f"deleted the half-built table {table}")
        elif tables.table_exists(dynamodb, table):
            control.delete_control(dynamodb, table)
            self.cleanup(record)
            self.progress.note(f"released {table}'s live projector; the table may be incomplete: replay it again")
        self.records.delete()
        self.summary.table = table

    def cleanup(self, record: dict[str, Any]) -> None:
        keys = [tables.done_key((i, int(record["shards"]))) for i in range(int(record["shards"]))]
        if record.get("files"):
            from escore.replay_file import done_key as file_done_key

            count = int(record["files"])
            keys += [file_done_key(k, count) for k in range(count)]
        tables.delete_items(self.clients.dynamodb, record["table"], [*keys, tables.CUTS, tables.CLAIM])

    def _shards_left(self, record: dict[str, Any]) -> int:
        count = int(record.get("shards", 1))
        return sum(1 for index in range(count)
                   if tables.get_state(self.clients.dynamodb, record["table"], tables.done_key((index, count))) is None)

    # archive ------------------------------------------------------------------------------------
    def _reader(self) -> ArchiveReader:
        kwargs: dict[str, Any] = {"workers": self.options.read_workers, "upcaster": self.upcaster}
        if self.options.memory_budget:
            kwargs["memory_budget"] = self.options.memory_budget
        return ArchiveReader(self.resources.archive_bucket, self.clients.s3, **kwargs)

    # tables -------------------------------------------------------------------------------------
    def drop_table(self, name: str) -> None:
        """Delete a retired table of this projection (never the active one, nor the stack's own)."""
        if name == self.active_table():
            raise ReplayError(f"{name} is the active table of {self.projection.name}")
        if name == self.initial_table():
            raise ReplayError(
                f"{name} belongs to the deployment (CloudFormation or the local runtime): it is left in place"
            )
        if tables.base_name(name) != tables.base_name(self.initial_table()):
            raise ReplayError(f"{name} is not a table of {self.projection.name}")
        tables.delete_table(self.clients.dynamodb, name)
        self.progress.note(f"dropped {name}")

    def tables(self) -> list[tuple[str, bool]]:
        """This projection's tables (the deployed one and the ones replay built), active first."""
        names = tables.generations(self.clients.dynamodb, tables.base_name(self.initial_table()))
        active = self.active_table()
        return sorted(((n, n == active) for n in names), key=lambda t: (not t[1], t[0]))


def _window(options: ReplayOptions) -> str:
    parts = [f"--since {options.since.isoformat()}" if options.since else "",
             f"--until {options.until.isoformat()}" if options.until else ""]
    return " ".join(p for p in parts if p)
