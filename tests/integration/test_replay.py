"""Replay on moto: a rebuilt projection equals the fold of the unique events; resume after a crash at
any write; blue/green switch; the hand-off to the live projector; in-place rebuilds under live traffic."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws
from replay_support import BUCKET, T0, History, LiveMapping, archive_with_duplicates, fold, read_model, scan
from support.aws import create_projection_table

from escore import control
from escore.control import Gate
from escore.engine import Delivery, Projector, position_of
from escore.envelope import Envelope, encode_record
from escore.naming import table_parameter as table_parameter_name
from escore.naming import table_parameter_env
from escore.projection import ProjectionSpec, is_replayed, mark_replayed
from escore.projector_lambda import kinesis_handler
from escore.tables import TableResolver
from eventstack.local.emulation import tuned_moto_dynamodb
from eventstack.replay import (
    Clients,
    Replayer,
    ReplayError,
    ReplayOptions,
    load_spec,
)
from eventstack.resources import Resources
from eventstack.topology import TOPOLOGY

pytestmark = pytest.mark.integration

STAGE = "test"
PROJECTIONS = ("user_profiles", "user_timeline", "hashtag_counts")


class Crash(BaseException):
    """The replay process dies (a kill, an OOM) in the middle of a request."""


class CrashingDynamoDB:
    """A DynamoDB client that dies at the k-th write of a read-model item (replay's `$` items aside)."""

    def __init__(self, client: Any, at: int) -> None:
        self._client = client
        self.at = at
        self.writes = 0

    def _item_write(self, method: str, kwargs: dict[str, Any]) -> Any:
        key = kwargs.get("Key") or kwargs.get("Item") or {}
        if not key.get("pk", {}).get("S", "$").startswith("$"):
            self.writes += 1
            if self.writes == self.at:
                raise Crash(f"crashed at item write {self.at}")
        return getattr(self._client, method)(**kwargs)

    def put_item(self, **kwargs: Any) -> Any:
        return self._item_write("put_item", kwargs)

    def update_item(self, **kwargs: Any) -> Any:
        return self._item_write("update_item", kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class Stack:
    """The pieces of a deployed stage that replay touches, on moto, with 'live' projectors."""

    def __init__(self, engine: str = "local") -> None:
        self.engine = engine  # the fold's engine of every replay but a sharded one (which scans)
        self.clients = Clients(*(boto3.client(n, region_name="us-east-1")
                                 for n in ("dynamodb", "s3", "kinesis", "ssm")))
        self.clients.s3.create_bucket(Bucket=BUCKET)
        for name in PROJECTIONS:
            create_projection_table(self.clients.dynamodb, name)
        for service in ("posts", "profiles"):
            self.clients.kinesis.create_stream(StreamName=f"{service}-events", ShardCount=2)
        self.resources = Resources(
            stage=STAGE,
            archive_bucket=BUCKET,
            tables={name: name for name in PROJECTIONS},
            streams={"posts": "posts-events", "profiles": "profiles-events"},
        )
        self.specs = {name: load_spec(name) for name in PROJECTIONS}
        self._ticks = itertools.count()

    def env(self, name: str) -> dict[str, str]:
        return {f"{name.upper()}_TABLE": name, table_parameter_env(name): table_parameter_name(STAGE, name)}

    def sources(self, name: str) -> tuple[str, ...]:
        return TOPOLOGY.projection(name)[1].sources

    def simulate_live(self, name: str, events: list[Envelope], rng: random.Random) -> None:
        """The live projector's work on the deployed table, before any replay: each source delivers its
        events in order, in batches, some delivered twice (same positions)."""
        for service in self.sources(name):
            mine = [e for e in events if e.service == service]
            start = 0
            while start < len(mine):
                size = rng.randint(10, 80)
                batch = [Delivery(e, f"sim:{service}", position_of(start + i + 1))
                         for i, e in enumerate(mine[start:start + size])]
                for _ in range(2 if rng.random() < 0.3 else 1):
                    result = Projector(self.specs[name], name, self.clients.dynamodb).apply(batch)
                    assert not result.failed, result.failed[:3]
                start += size

    def publish(self, events: list[Envelope]) -> None:
        for item in events:
            self.clients.kinesis.put_record(StreamName=f"{item.service}-events", Data=encode_record(item),
                                            PartitionKey=item.stream_id)

    def live_handler(self, name: str, *, table_cache: float = 0.0, gate_cache: float = 0.0) -> Any:
        """The live projector as deployed (build_projector): the pointer, and the gate on its table."""
        resolver = TableResolver(self.env(name), name, ssm_client=self.clients.ssm, cache_seconds=table_cache)
        gate = Gate(self.clients.dynamodb, resolver, cache_seconds=gate_cache, wait_seconds=0)
        return kinesis_handler(Projector(self.specs[name], gate.table, self.clients.dynamodb), gate=gate)

    def mappings(self, name: str, handler: Any, **kwargs: Any) -> list[LiveMapping]:
        return [LiveMapping(self.clients.kinesis, f"{s}-events", handler, **kwargs) for s in self.sources(name)]

    def replayer(self, name: str, spec: ProjectionSpec | None = None, clients: Clients | None = None,
                 **options: Any) -> Replayer:
        options.setdefault("handoff_seconds", 0)
        options.setdefault("batch_size", 60)
        options.setdefault("apply_workers", 1)
        options.setdefault("read_workers", 4)
        options.setdefault("fence_seconds", 0)
        options.setdefault("poll_seconds", 0.05)
        options.setdefault("engine", "scan" if options.get("shard", (0, 1))[1] > 1 else self.engine)
        start = T0 + timedelta(days=30)
        return Replayer(ReplayOptions(name, **options), self.resources, clients or self.clients,
                        spec=spec or self.specs[name], clock=lambda: start + timedelta(minutes=next(self._ticks)))

    def pointer(self, name: str) -> str | None:
        try:
            return str(self.clients.ssm.get_parameter(Name=table_parameter_name(STAGE, name))["Parameter"]["Value"])
        except self.clients.ssm.exceptions.ParameterNotFound:
            return None


@pytest.fixture(params=["local", "scan"])
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """Every test on both fold engines: the local one (a DuckDB plan folded file by file, here in
    process: --workers 1) and the scan (each worker reads the whole archive, keeps its hash range)."""
    with mock_aws(), tuned_moto_dynamodb():
        yield Stack(request.param)


def mine(stack: Stack, name: str, events: list[Envelope]) -> list[Envelope]:
    return [e for e in events if e.service in stack.sources(name)]


# --- into a new table -------------------------------------------------------------------------------


def test_a_rebuilt_projection_equals_the_live_one(stack: Stack) -> None:
    rng = random.Random(11)
    events = History(seed=11).run(360)
    archived, recent = events[:300], events[250:]  # Firehose is behind; the stream holds the tail
    archive_with_duplicates(stack.clients.s3, archived, rng, duplicate_rate=0.15)
    stack.publish(recent)

    for name in PROJECTIONS:
        stack.simulate_live(name, events, rng)
        expected = fold(stack.specs[name], events)
        assert read_model(stack.clients.dynamodb, name) == expected  # the live one is right
        summary = stack.replayer(name).run()
        assert summary.ok, summary.problems + summary.failures
        assert summary.switched and stack.pointer(name) == summary.table != name
        assert read_model(stack.clients.dynamodb, summary.table) == expected
        assert summary.archive.duplicates > 0 and summary.duplicates >= summary.archive.duplicates
        assert summary.applied + summary.skipped == len(mine(stack, name, events))
        assert "events read" in summary.line() and "duplicates dropped" in summary.line()
        # readers and the live projector now resolve the new table; replay's own items are gone
        assert TableResolver(stack.env(name), name, ssm_client=stack.clients.ssm)() == summary.table
        left = {k for k in scan(stack.clients.dynamodb, summary.table) if k[0].startswith("$")}
        assert left == {("$control", "$coverage")}


def test_legacy_events_in_the_archive_fold_with_their_streams_state(stack: Stack) -> None:
    """Events of the first deployment (schema 1: an edit or a deletion without its post's author,
    creation time or tags) fold only with per-stream state: the rebuild equals the in-memory fold."""
    rng = random.Random(13)
    history = History(seed=13, legacy=0.6)
    old = history.run(300)
    history.legacy = 0.0
    new = history.run(100)  # the current code: the stream's tail carries the facts
    assert {e.schema_version for e in old if e.type == "PostDeleted"} == {1, 2}
    archive_with_duplicates(stack.clients.s3, old + new[:60], rng)
    stack.publish(new[30:])
    for name in PROJECTIONS:
        summary = stack.replayer(name).run()
        assert summary.ok, summary.problems + summary.failures
        assert read_model(stack.clients.dynamodb, summary.table) == fold(stack.specs[name], old + new) != {}


@pytest.mark.parametrize("at", [0.0, 0.01, 0.3, 0.5, 0.8, 1.0])
def test_a_replay_resumed_after_a_crash_at_any_write_is_exact(stack: Stack, at: float) -> None:
    rng = random.Random(5)
    events = History(seed=5).run(300)
    archive_with_duplicates(stack.clients.s3, events[:260], rng, duplicate_rate=0.1, per_object=25)
    stack.publish(events[200:])
    name = "user_profiles"
    expected = fold(stack.specs[name], events)
    clean = stack.replayer(name, memory_budget=40_000).run()  # how many item writes a replay makes
    assert clean.ok and read_model(stack.clients.dynamodb, clean.table) == expected
    crash_at = 1 + round(at * (clean.written - 1))  # the first write, ..., the last one

    crashing = CrashingDynamoDB(stack.clients.dynamodb, crash_at)
    clients = Clients(crashing, stack.clients.s3, stack.clients.kinesis, stack.clients.ssm)
    first = stack.replayer(name, clients=clients, memory_budget=40_000)
    with pytest.raises(Crash):
        first.run()
    assert stack.pointer(name) == clean.table  # nothing switched
    assert first.summary.written == crash_at - 1

    with pytest.raises(ReplayError, match="--resume"):
        stack.replayer(name).run()

    second = stack.replayer(name, resume=True, memory_budget=40_000)
    summary = second.run()
    assert summary.ok, summary.problems + summary.failures
    assert summary.table == first.summary.table != clean.table and summary.switched
    assert read_model(stack.clients.dynamodb, summary.table) == expected
    # every write the first run made is found done, none is made twice
    assert summary.already == first.summary.written and summary.written + summary.already == clean.written


def test_a_finisher_stopped_in_the_handoff_is_resumed(stack: Stack) -> None:
    events = History(seed=15).run(200)
    archive_with_duplicates(stack.clients.s3, events[:150], random.Random(15))
    stack.publish(events[100:])
    name = "user_timeline"
    first = stack.replayer(name, handoff_seconds=0.3)
    rounds = [0]

    def crash_in_the_handoff(phase: str) -> None:
        if phase == "tailed":
            rounds[0] += 1
            stack.publish(History(seed=15 + rounds[0], start=T0 + timedelta(days=1)).run(5))
            if rounds[0] == 2:
                raise Crash("died in the hand-off")

    first.hooks = crash_in_the_handoff
    with pytest.raises(Crash):
        first.run()
    table = first.summary.table
    held = control.read_control(stack.clients.dynamodb, table)
    assert stack.pointer(name) == table and held is not None and held.mode == "handoff"
    late = History(seed=99, start=T0 + timedelta(days=2)).run(20)
    stack.publish(late)
    summary = stack.replayer(name, resume=True).run()
    assert summary.ok and summary.switched, summary.problems
    assert control.read_control(stack.clients.dynamodb, table) is None
    everything = events + [e for n in (1, 2) for e in History(seed=15 + n, start=T0 + timedelta(days=1)).run(5)]
    assert read_model(stack.clients.dynamodb, table) == fold(stack.specs[name], everything + late)


def test_into_new_switches_only_when_complete(stack: Stack) -> None:
    events = History(seed=2).run(300)
    archive_with_duplicates(stack.clients.s3, events, random.Random(2))
    seen: dict[str, str | None] = {}

    def watch(phase: str) -> None:
        seen[phase] = stack.pointer("user_timeline")

    replayer = stack.replayer("user_timeline")
    replayer.hooks = watch
    summary = replayer.run()
    assert seen["archive-done"] is None and seen["caught-up"] is None
    assert seen["switched"] == summary.table
    # the old table stays until dropped explicitly; the deployed one is never dropped
    assert "user_timeline" in stack.clients.dynamodb.list_tables()["TableNames"]
    with pytest.raises(ReplayError):
        replayer.drop_table("user_timeline")

    # a second generation replaces the first; the first can then be dropped
    again = stack.replayer("user_timeline", drop_old=True).run()
    assert again.switched and stack.pointer("user_timeline") == again.table != summary.table
    assert summary.table not in stack.clients.dynamodb.list_tables()["TableNames"]


def test_a_gap_in_the_archive_blocks_the_switch(stack: Stack) -> None:
    events = History(seed=4).run(200)
    lost = next(e for e in events if e.type == "PostEdited")
    archive_with_duplicates(stack.clients.s3, [e for e in events if e is not lost], random.Random(4),
                            duplicate_rate=0)
    summary = stack.replayer("user_timeline").run()
    assert not summary.ok and any(lost.stream_id in p for p in summary.problems)
    assert not summary.switched and stack.pointer("user_timeline") is None


def test_shards_share_the_work_and_the_last_one_switches(stack: Stack) -> None:
    events = History(seed=6).run(300)
    archive_with_duplicates(stack.clients.s3, events[:250], random.Random(6))
    stack.publish(events[200:])
    first = stack.replayer("user_profiles", shard=(0, 2)).run()
    assert first.waiting_for_shards == 1 and not first.switched and stack.pointer("user_profiles") is None
    second = stack.replayer("user_profiles", shard=(1, 2)).run()
    assert second.switched and second.table == first.table
    assert read_model(stack.clients.dynamodb, first.table) == fold(stack.specs["user_profiles"], events)


def test_replayed_events_are_marked(stack: Stack) -> None:
    """A side-effect consumer (a notification fold, say) sees `metadata.replayed` on every replayed event."""
    events = History(seed=12).run(120)
    archive_with_duplicates(stack.clients.s3, events[:100], random.Random(12))
    stack.publish(events[80:])
    seen: list[bool] = []
    real = stack.specs["user_timeline"]

    def watching(fold: Any) -> Any:
        def run(state: Any, event: Any, item: Envelope) -> Any:
            seen.append(is_replayed(item))
            return fold(state, event, item)
        return run

    spy = ProjectionSpec(real.name, {kind: watching(fold) for kind, fold in real.folds.items()})
    replayer = stack.replayer("user_timeline", spec=spy)
    replayer.hooks = lambda phase: stack.publish(History(seed=1, start=T0 + timedelta(days=1)).run(10)) \
        if phase == "folded" else None  # and some after the cut, for the tail
    summary = replayer.run()
    assert summary.ok and seen and all(seen)
    original = events[0]
    assert not is_replayed(original) and is_replayed(mark_replayed(original))


@pytest.mark.parametrize("name", ["user_profiles", "hashtag_counts"])
def test_a_copy_re_sent_just_after_the_cut_is_dropped(stack: Stack, name: str) -> None:
    """The rebuilt shared items keep the tags of their last events per shard (`_r#<shard>`), as the
    live projector does: a re-sent copy of an event folded before the cut, put on the stream just
    after it, is recognised by the tail and by the live projector."""
    events = History(seed=25).run(200)
    archive_with_duplicates(stack.clients.s3, events[:120], random.Random(25))
    stack.publish(events)
    copies = [e for e in events[-40:] if e.type == "PostCreated"][-4:]
    assert copies
    replayer = stack.replayer(name, handoff_seconds=0.2)
    replayer.hooks = lambda phase: stack.publish(copies) if phase == "recorded" else None
    summary = replayer.run()
    assert summary.ok, summary.problems + summary.failures
    assert read_model(stack.clients.dynamodb, summary.table) == fold(stack.specs[name], events)
    assert any(n.startswith("_r#posts-events:") for item in scan(stack.clients.dynamodb, summary.table).values()
               for n in item)
    stack.publish(copies)  # and again, to the live projector after the hand-off
    for mapping in stack.mappings(name, stack.live_handler(name)):
        for shard in mapping._shards():
            mapping.checkpoints[shard] = mapping.batch(shard, 10_000)[-1]["kinesis"]["sequenceNumber"]
        mapping.drain()  # (nothing left: positions it had, from the cut on, are the tail's)
    live = stack.mappings(name, stack.live_handler(name))
    for mapping in live:  # a live projector that starts from the cut: the copies come within 24 events
        for shard in mapping._shards():
            records = mapping.batch(shard, 10_000)
            cut = [r for r in records if decode_id(r) in {c.event_id for c in copies}]
            if cut:
                mapping.checkpoints[shard] = str(int(cut[0]["kinesis"]["sequenceNumber"]) - 1)
        mapping.drain()
    assert read_model(stack.clients.dynamodb, summary.table) == fold(stack.specs[name], events)


def decode_id(record: dict[str, Any]) -> str:
    import base64

    from escore.envelope import decode

    return decode(base64.b64decode(record["kinesis"]["data"])).event_id


# --- the hand-off: the live projector and the tail in one namespace ------------------------------------


def test_the_handoff_overlap_is_exact_and_a_batch_beyond_the_tail_is_refused(stack: Stack) -> None:
    name = "user_profiles"
    history = History(seed=21)
    events = history.run(240)
    archive_with_duplicates(stack.clients.s3, events[:150], random.Random(21))
    stack.publish(events)
    handler = stack.live_handler(name)
    live = stack.mappings(name, handler, batch_size=15, rng=random.Random(21))
    for mapping in live:  # the live projector had got half way through the stream (on the old table)
        for shard in mapping._shards():
            records = mapping.batch(shard, 10_000)
            mapping.checkpoints[shard] = records[len(records) // 2]["kinesis"]["sequenceNumber"]
    produced: list[Envelope] = []
    probes: list[int] = []

    def during(phase: str) -> None:
        if phase not in ("switched", "tailed"):
            return
        table = stack.pointer(name)
        assert table is not None
        batch = history.run(6)
        produced.extend(batch)
        stack.publish(batch)
        held = control.read_control(stack.clients.dynamodb, table)
        assert held is not None and held.mode == "handoff"
        # a batch that starts beyond what the tail has applied is refused, and writes nothing
        for mapping in live:
            for shard in mapping._shards():
                ns = f"{mapping.stream}:{int(shard.rpartition('-')[2])}"
                probe = LiveMapping(stack.clients.kinesis, mapping.stream, handler)
                probe.checkpoints[shard] = str(int(held.tail[ns])) if held.tail.get(ns) else None
                records = probe.batch(shard, 5)
                if not records or int(records[0]["kinesis"]["sequenceNumber"]) <= int(held.tail[ns] or 0):
                    continue
                before = scan(stack.clients.dynamodb, table)
                assert len(probe.deliver(shard, records)) == len(records)
                assert scan(stack.clients.dynamodb, table) == before
                probes.append(len(records))
        for mapping in live:  # the live projector goes on: admitted where it overlaps the tail
            mapping.step()

    replayer = stack.replayer(name, handoff_seconds=1.0, poll_seconds=0.02, batch_size=20)
    replayer.hooks = during
    summary = replayer.run()
    assert summary.ok and summary.switched, summary.problems + summary.failures
    assert probes and sum(m.invocations - m.refused for m in live) > 0
    for mapping in live:  # the hand-off is over: the live projector goes on alone
        mapping.drain()
    assert read_model(stack.clients.dynamodb, summary.table) == fold(stack.specs[name], events + produced)


def test_commands_during_the_replay_are_neither_lost_nor_applied_twice(stack: Stack) -> None:
    name = "user_profiles"
    history = History(seed=9)
    before = history.run(300)
    rng = random.Random(9)
    stack.simulate_live(name, before, rng)
    archive_with_duplicates(stack.clients.s3, before[:250], rng)
    stack.publish(before[200:])

    # the live system: commands keep arriving, go on the stream, and the live projector (pointer and
    # gate both cached, as deployed) delivers them batch by batch, retrying what it reports failed
    handler = stack.live_handler(name, table_cache=0.3, gate_cache=0.2)
    live = stack.mappings(name, handler, batch_size=8, latest=True)
    stop = threading.Event()
    produced: list[Envelope] = []
    errors: list[BaseException] = []

    def run_live() -> None:
        try:
            while not stop.is_set():
                batch = [history.step() for _ in range(rng.randint(1, 6))]
                produced.extend(batch)
                stack.publish(batch)
                for mapping in live:
                    mapping.step()
                time.sleep(0.01)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=run_live)

    def phases(phase: str) -> None:
        if phase == "recorded":
            thread.start()
        if phase == "finished":
            stop.set()

    replayer = stack.replayer(name, handoff_seconds=1.0, poll_seconds=0.1, batch_size=40)
    replayer.hooks = phases
    summary = replayer.run()
    thread.join()
    assert not errors, errors
    assert summary.ok and summary.switched, summary.problems + summary.failures
    assert len(produced) > 10
    tail = history.run(5)  # after the hand-off: the live projector alone, on the new table
    stack.publish(tail)
    for mapping in live:
        mapping.drain()
    assert read_model(stack.clients.dynamodb, summary.table) == fold(stack.specs[name], before + produced + tail)


# --- in place ----------------------------------------------------------------------------------------


def test_in_place_resets_and_rebuilds(stack: Stack) -> None:
    events = History(seed=8).run(250)
    stack.simulate_live("user_timeline", events, random.Random(8))
    archive_with_duplicates(stack.clients.s3, events, random.Random(8))
    # a bug wrote nonsense into the projection
    stack.clients.dynamodb.put_item(TableName="user_timeline",
                                    Item={"pk": {"S": "timeline#nobody"}, "sk": {"S": "x"}})
    summary = stack.replayer("user_timeline", into="in-place").run()
    assert summary.ok and not summary.switched and summary.table == "user_timeline"
    assert stack.pointer("user_timeline") is None
    assert read_model(stack.clients.dynamodb, "user_timeline") == fold(stack.specs["user_timeline"], events)
    assert control.read_control(stack.clients.dynamodb, "user_timeline") is None


@pytest.mark.parametrize("name", ["user_profiles", "hashtag_counts"])
def test_in_place_while_live_batches_arrive_ends_exact(stack: Stack, name: str) -> None:
    history = History(seed=17)
    events = history.run(260)
    stack.publish(events)
    handler = stack.live_handler(name)
    live = stack.mappings(name, handler, batch_size=20, rng=random.Random(17))
    for mapping in live:  # live until now: the deployed table is up to date
        mapping.drain()
    archive_with_duplicates(stack.clients.s3, events[:200], random.Random(17))
    assert read_model(stack.clients.dynamodb, name) == fold(stack.specs[name], events)
    produced: list[Envelope] = []
    refused_while_rebuilding = [0]

    def during(phase: str) -> None:
        batch = history.run(4)
        produced.extend(batch)
        stack.publish(batch)
        refused = sum(m.refused for m in live)
        for mapping in live:
            mapping.step()
        if phase in ("recorded", "stream-read", "archive-done", "written", "caught-up"):
            refused_while_rebuilding[0] += sum(m.refused for m in live) - refused

    replayer = stack.replayer(name, into="in-place", handoff_seconds=0.6, poll_seconds=0.02, batch_size=25)
    replayer.hooks = during
    summary = replayer.run()
    assert summary.ok and not summary.switched, summary.problems + summary.failures
    assert refused_while_rebuilding[0] > 0  # the live projector was held back while the table was rebuilt
    for mapping in live:
        mapping.drain()
    assert read_model(stack.clients.dynamodb, name) == fold(stack.specs[name], events + produced)


def test_an_in_place_replay_that_died_holds_the_live_projector_back_until_resumed(stack: Stack) -> None:
    name = "user_profiles"
    history = History(seed=23)
    events = history.run(220)
    stack.publish(events)
    live = stack.mappings(name, stack.live_handler(name), batch_size=30)
    for mapping in live:
        mapping.drain()
    archive_with_duplicates(stack.clients.s3, events[:180], random.Random(23))
    crashing = CrashingDynamoDB(stack.clients.dynamodb, at=25)
    with pytest.raises(Crash):
        stack.replayer(name, into="in-place", clients=Clients(
            crashing, stack.clients.s3, stack.clients.kinesis, stack.clients.ssm)).run()
    more = history.run(30)  # commands go on; the live projector's batches are refused meanwhile
    stack.publish(more)
    for mapping in live:
        refused = mapping.refused
        assert mapping.step() == 0 and mapping.refused > refused
    held = control.read_control(stack.clients.dynamodb, name)
    assert held is not None and held.mode == "rebuild" and held.active(time.time())

    summary = stack.replayer(name, into="in-place", resume=True).run()
    assert summary.ok, summary.problems + summary.failures
    assert summary.already == 24
    for mapping in live:
        mapping.drain()
    assert read_model(stack.clients.dynamodb, name) == fold(stack.specs[name], events + more)


def test_a_lapsed_hold_is_not_resumed(stack: Stack) -> None:
    name = "user_timeline"
    events = History(seed=24).run(120)
    archive_with_duplicates(stack.clients.s3, events, random.Random(24))
    crashing = CrashingDynamoDB(stack.clients.dynamodb, at=5)
    with pytest.raises(Crash):
        stack.replayer(name, into="in-place", clients=Clients(
            crashing, stack.clients.s3, stack.clients.kinesis, stack.clients.ssm)).run()
    control.put_rebuild(stack.clients.dynamodb, name, until=time.time() - 1)  # nobody resumed it in time
    with pytest.raises(ReplayError, match="lapsed"):
        stack.replayer(name, into="in-place", resume=True).run()
    stack.replayer(name, abandon=True).run()
    assert control.read_control(stack.clients.dynamodb, name) is None
    summary = stack.replayer(name, into="in-place").run()  # again, from the start
    assert summary.ok and read_model(stack.clients.dynamodb, name) == fold(stack.specs[name], events)


# --- the gate --------------------------------------------------------------------------------------


def test_the_gate_follows_the_control_item(stack: Stack) -> None:
    client, table = stack.clients.dynamodb, "user_profiles"
    now = [1000.0]
    gate = Gate(client, table, cache_seconds=10, wait_seconds=0, clock=lambda: now[0], monotonic=lambda: now[0])
    first = {"posts-events:0": position_of(7)}
    assert gate.admit(first) is None  # no control item
    control.put_rebuild(client, table, until=now[0] + 60)
    assert gate.admit(first) is None  # cached for 10 s
    now[0] += 11
    assert "rebuilt" in (gate.admit(first) or "")
    control.put_handoff(client, table, {"posts-events:0": position_of(7), "posts-events:1": ""}, until=now[0] + 60)
    now[0] += 11
    assert gate.admit(first) is None  # starts at the tail: overlaps it
    assert "beyond the tail" in (gate.admit({"posts-events:0": position_of(8)}) or "")
    assert "beyond the tail" in (gate.admit({"posts-events:1": position_of(1)}) or "")
    assert "not tailed" in (gate.admit({"redrive:posts-events:0:5": position_of(5)}) or "")
    control.update_tail(client, table, {"posts-events:0": position_of(9), "posts-events:1": position_of(3)})
    now[0] += 11
    assert gate.admit({"posts-events:0": position_of(8), "posts-events:1": position_of(2)}) is None
    now[0] += 60  # the lease ran out: a replay that died holds nothing back
    assert gate.admit({"posts-events:0": position_of(50)}) is None
    control.delete_control(client, table)
    assert gate.table() == table


def test_the_table_resolver_follows_the_pointer_with_a_cache(stack: Stack) -> None:
    now = [0.0]
    env = stack.env("user_timeline")
    resolver = TableResolver(env, "user_timeline", ssm_client=stack.clients.ssm, cache_seconds=10,
                             clock=lambda: now[0])
    assert resolver() == "user_timeline"  # no pointer yet: the deployed table
    stack.clients.ssm.put_parameter(Name=table_parameter_name(STAGE, "user_timeline"), Value="user_timeline-g1",
                                    Type="String", Overwrite=True)
    assert resolver() == "user_timeline"  # cached
    now[0] = 11
    assert resolver() == "user_timeline-g1"
    # without the pointer variable (unit tests, an old deployment) the table variable is the answer
    assert TableResolver({"USER_TIMELINE_TABLE": "t"}, "user_timeline")() == "t"


# --- issue 9: windowed replays, a second in-place replay, undecodable stream records ------------------


def test_a_windowed_replay_does_not_switch_to_a_partial_table(stack: Stack) -> None:
    """Issue 9 defect 1: a window that leaves archive objects out builds a table holding only the
    window; readers are not switched to it unless `switch_partial` says so, and in place it is refused
    before anything is touched."""
    name = "user_timeline"
    events = History(seed=31).run(300)
    archive_with_duplicates(stack.clients.s3, events, random.Random(31), duplicate_rate=0, per_object=20)
    since = T0 + timedelta(hours=2)  # the first six objects of each service are before it
    windowed = stack.replayer(name, since=since, catch_up=False).run()
    assert not windowed.switched and stack.pointer(name) is None
    assert windowed.withheld and "--switch-partial" in windowed.withheld
    assert not windowed.ok  # a non-zero exit
    assert windowed.table in stack.clients.dynamodb.list_tables()["TableNames"]  # left to inspect or drop
    # nothing is left in progress: a full replay starts cleanly and switches
    full = stack.replayer(name, catch_up=False).run()
    assert full.ok and full.switched and stack.pointer(name) == full.table
    assert read_model(stack.clients.dynamodb, full.table) == fold(stack.specs[name], events)
    # a window that covers the whole archive is a full replay
    covering = stack.replayer(name, since=T0 - timedelta(hours=1), catch_up=False).run()
    assert covering.ok and covering.switched and not covering.withheld
    assert read_model(stack.clients.dynamodb, covering.table) == fold(stack.specs[name], events)
    # explicitly asked for
    forced = stack.replayer(name, since=since, catch_up=False, switch_partial=True).run()
    assert forced.ok and forced.switched and stack.pointer(name) == forced.table
    # in place: refused before the live projector is held back or the table emptied
    before = scan(stack.clients.dynamodb, forced.table)
    with pytest.raises(ReplayError, match="--switch-partial"):
        stack.replayer(name, into="in-place", until=T0 + timedelta(hours=1), catch_up=False).run()
    assert scan(stack.clients.dynamodb, forced.table) == before
    assert control.read_control(stack.clients.dynamodb, forced.table) is None
    assert stack.replayer(name, catch_up=False).run().switched  # and no replay record was left behind


def test_a_windowed_replay_through_the_cli_exits_3(stack: Stack) -> None:
    from typer.testing import CliRunner

    from eventstack import resources
    from eventstack.cli import app

    resources.publish(stack.resources, stack.clients.ssm)
    events = History(seed=34).run(150)
    archive_with_duplicates(stack.clients.s3, events, random.Random(34), duplicate_rate=0, per_object=20)
    args = ["replay", "user_timeline", "--stage", STAGE, "--since", f"{T0 + timedelta(hours=1):%Y-%m-%dT%H}",
            "--no-catch-up", "--handoff", "0", "--workers", "1"]  # (moto is in this process)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    assert "not switched" in result.stderr and "--switch-partial" in result.stderr
    assert stack.pointer("user_timeline") is None
    help_text = " ".join(CliRunner().invoke(app, ["replay", "--help"]).stdout.split())
    assert "--switch-partial" in help_text and "3 a --since/--until window" in help_text


def test_in_place_runs_again_and_rebuilds_a_table_built_into_new(stack: Stack) -> None:
    """Issue 9 defect 2: a finished replay leaves nothing that makes the next one a no-op."""
    name = "user_timeline"
    events = History(seed=32).run(240)
    archive_with_duplicates(stack.clients.s3, events[:200], random.Random(32))
    stack.publish(events[150:])
    expected = fold(stack.specs[name], events)
    nonsense = {"pk": {"S": "timeline#nobody"}, "sk": {"S": "x"}}

    first = stack.replayer(name, into="in-place").run()
    assert first.ok and first.applied > 0 and read_model(stack.clients.dynamodb, name) == expected
    stack.clients.dynamodb.put_item(TableName=name, Item=nonsense)
    second = stack.replayer(name, into="in-place").run()
    assert second.ok and second.applied == first.applied and second.written == first.written > 0
    assert read_model(stack.clients.dynamodb, name) == expected

    built = stack.replayer(name, into="new").run()
    assert built.ok and built.switched
    stack.clients.dynamodb.put_item(TableName=built.table, Item=nonsense)
    third = stack.replayer(name, into="in-place").run()
    assert third.ok and third.table == built.table and third.applied == first.applied and third.written > 0
    assert read_model(stack.clients.dynamodb, built.table) == expected
    assert {k for k in scan(stack.clients.dynamodb, built.table) if k[0].startswith("$")} == {("$control", "$coverage")}


def test_an_undecodable_stream_record_is_reported_and_does_not_block_the_switch(stack: Stack) -> None:
    """Issue 9 defect 3: a record nobody can decode (the live mappings dead-lettered it) is counted
    and named, by stream, shard and sequence number, in the fold up to the cut and in the tail."""
    name = "user_timeline"
    history = History(seed=33)
    events = history.run(200)
    archive_with_duplicates(stack.clients.s3, events[:150], random.Random(33))
    stack.publish(events[100:140])
    junk = stack.clients.kinesis.put_record(StreamName="posts-events", Data=b"not an envelope\n", PartitionKey="x")
    stack.publish(events[140:])
    later = History(seed=35, start=T0 + timedelta(days=1)).run(20)
    junk_after: list[str] = []

    def after_the_cut(phase: str) -> None:
        if phase == "folded":
            stack.publish(later[:10])
            junk_after.append(stack.clients.kinesis.put_record(
                StreamName="posts-events", Data=b"\xff\xfe", PartitionKey="y")["SequenceNumber"])
            stack.publish(later[10:])

    replayer = stack.replayer(name)
    replayer.hooks = after_the_cut
    summary = replayer.run()
    assert summary.ok and summary.switched, summary.problems + summary.failures
    assert summary.bad_records == 2
    sequences = (junk["SequenceNumber"], junk_after[0])
    for sequence, shard, sample in zip(sequences, (junk["ShardId"], None), summary.bad_record_samples, strict=True):
        assert sample.startswith("posts-events/shardId-") and sequence in sample
        assert shard is None or shard in sample
    assert read_model(stack.clients.dynamodb, summary.table) == fold(stack.specs[name], events + later)
    again = stack.replayer(name).run()  # and every later replay too
    assert again.ok and again.switched and again.bad_records == 2


def test_an_undecodable_archive_line_still_blocks_the_switch(stack: Stack) -> None:
    """A bad archive line is an archive problem: it is still refused (the fold cannot know what it held)."""
    from replay_support import put_object

    events = History(seed=36).run(100)
    archive_with_duplicates(stack.clients.s3, events, random.Random(36), duplicate_rate=0)
    key = put_object(stack.clients.s3, "posts", T0, "junk", [])
    stack.clients.s3.put_object(Bucket=BUCKET, Key=key, Body=__import__("gzip").compress(b"not an envelope\n"))
    summary = stack.replayer("user_timeline").run()
    assert not summary.ok and not summary.switched and any("not envelopes" in p for p in summary.problems)
