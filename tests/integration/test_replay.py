"""Replay on moto: a rebuilt projection equals the live one; resume; blue/green switch; hand-off to live."""

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
from replay_support import BUCKET, T0, History, archive_with_duplicates, fold, read_model
from support.aws import create_projection_table

from escore.envelope import Envelope, encode_record
from escore.projection import ProjectionSpec, Projector
from escore.tables import TableResolver, table_parameter_env, table_parameter_name
from eventstack.local.emulation import tuned_moto_dynamodb
from eventstack.replay import (
    Clients,
    Replayer,
    ReplayError,
    ReplayOptions,
    is_replayed,
    load_spec,
    mark_replayed,
)
from eventstack.resources import Resources
from eventstack.topology import TOPOLOGY

pytestmark = pytest.mark.integration

STAGE = "test"
PROJECTIONS = ("user_profiles", "user_timeline")


class Stack:
    """The pieces of a deployed stage that replay touches, on moto, with a 'live' projector."""

    def __init__(self) -> None:
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

    def live_apply(self, name: str, events: list[Envelope], table: str | None = None) -> None:
        """What the live Lambda does with a delivered batch."""
        table = table or TableResolver(self.env(name), name, ssm_client=self.clients.ssm, cache_seconds=0)()
        result = Projector(self.specs[name], table, self.clients.dynamodb).apply(events)
        assert not result.failed, result.failed[:3]

    def publish(self, events: list[Envelope]) -> None:
        for item in events:
            self.clients.kinesis.put_record(StreamName=f"{item.service}-events", Data=encode_record(item),
                                            PartitionKey=item.stream_id)

    def replayer(self, name: str, spec: ProjectionSpec | None = None, **options: Any) -> Replayer:
        options.setdefault("handoff_seconds", 0)
        options.setdefault("batch_size", 60)
        options.setdefault("apply_workers", 1)
        options.setdefault("read_workers", 4)
        start = T0 + timedelta(days=30)
        return Replayer(ReplayOptions(name, **options), self.resources, self.clients,
                        spec=spec or self.specs[name], clock=lambda: start + timedelta(minutes=next(self._ticks)))

    def pointer(self, name: str) -> str | None:
        try:
            return str(self.clients.ssm.get_parameter(Name=table_parameter_name(STAGE, name))["Parameter"]["Value"])
        except self.clients.ssm.exceptions.ParameterNotFound:
            return None


@pytest.fixture
def stack() -> Iterator[Stack]:
    with mock_aws(), tuned_moto_dynamodb():
        yield Stack()


def deliver_live(stack: Stack, events: list[Envelope], rng: random.Random) -> None:
    """Feed events to both live projections in stream order, in batches, some delivered twice."""
    for name in PROJECTIONS:
        sources = set(TOPOLOGY.projection(name)[1].sources)
        mine = [e for e in events if e.service in sources]
        start = 0
        while start < len(mine):
            size = rng.randint(10, 80)
            batch = mine[start : start + size]
            stack.live_apply(name, batch)
            if rng.random() < 0.3:
                stack.live_apply(name, batch)
            start += size


def test_a_rebuilt_projection_equals_the_live_one(stack: Stack) -> None:
    rng = random.Random(11)
    events = History(seed=11).run(360)
    deliver_live(stack, events, rng)
    archived, recent = events[:300], events[250:]  # Firehose is behind; the stream holds the tail
    archive_with_duplicates(stack.clients.s3, archived, rng, duplicate_rate=0.15)
    stack.publish(recent)

    for name in PROJECTIONS:
        expected = fold(stack.specs[name], events)
        assert read_model(stack.clients.dynamodb, name) == expected  # the live one is right
        summary = stack.replayer(name).run()
        assert summary.ok, summary.problems + summary.failures
        assert summary.switched and stack.pointer(name) == summary.table != name
        assert read_model(stack.clients.dynamodb, summary.table) == expected
        assert summary.archive.duplicates > 0 and summary.duplicates >= summary.archive.duplicates
        unique = [e for e in events if e.service in TOPOLOGY.projection(name)[1].sources]
        assert summary.applied + summary.skipped == len(unique)
        assert "events read" in summary.line() and "duplicates dropped" in summary.line()
        # readers and the live projector now resolve the new table
        assert TableResolver(stack.env(name), name, ssm_client=stack.clients.ssm)() == summary.table


def test_an_interrupted_replay_resumed_gives_the_same_result(stack: Stack) -> None:
    rng = random.Random(5)
    events = History(seed=5).run(400)
    archive_with_duplicates(stack.clients.s3, events, rng, duplicate_rate=0.1, per_object=25)
    expected = fold(stack.specs["user_profiles"], events)

    waves = 0

    def crash_on_third_wave(phase: str) -> None:
        nonlocal waves
        if phase == "wave-applied":
            waves += 1
            if waves == 3:
                raise KeyboardInterrupt

    first = stack.replayer("user_profiles", memory_budget=40_000, batch_size=20)
    first.hooks = crash_on_third_wave
    with pytest.raises(KeyboardInterrupt):
        first.run()
    assert stack.pointer("user_profiles") is None  # nothing switched
    assert first.summary.applied > 0

    with pytest.raises(ReplayError, match="--resume"):
        stack.replayer("user_profiles").run()

    second = stack.replayer("user_profiles", resume=True, memory_budget=40_000, batch_size=20)
    summary = second.run()
    assert summary.ok, summary.problems + summary.failures
    assert summary.table == first.summary.table and summary.switched
    assert read_model(stack.clients.dynamodb, summary.table) == expected
    # nothing applied twice: the two runs' applied events add up to the unique events
    assert first.summary.applied + first.summary.skipped + summary.applied + summary.skipped == len(events)
    # and the resumed run did not redo the completed work (at most the interrupted wave again)
    assert summary.applied + summary.skipped < len(events)


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


def test_commands_during_the_replay_are_neither_lost_nor_applied_twice(stack: Stack) -> None:
    name = "user_profiles"
    history = History(seed=9)
    before = history.run(300)
    rng = random.Random(9)
    deliver_live(stack, before, rng)
    archive_with_duplicates(stack.clients.s3, before[:250], rng)
    stack.publish(before[200:])

    # the live system: commands keep arriving; each event goes on the stream and, like the live
    # projector, into the table the pointer names (resolved with a cache, so a little stale)
    resolver = TableResolver(stack.env(name), name, ssm_client=stack.clients.ssm, cache_seconds=0.3)
    stop = threading.Event()
    produced: list[Envelope] = []
    errors: list[BaseException] = []
    retried: list[int] = []

    def live() -> None:
        try:
            while not stop.is_set():
                batch = [history.step() for _ in range(rng.randint(1, 8))]
                produced.extend(batch)
                stack.publish(batch)
                # As Lambda does with a partial failure: retry the batch. Just after the switch, an
                # event may be ahead of a predecessor the replay's tail has not copied over yet.
                for _attempt in range(100):
                    result = Projector(stack.specs[name], resolver(), stack.clients.dynamodb).apply(batch)
                    if not result.failed:
                        break
                    retried.append(len(result.failed))
                    time.sleep(0.05)
                else:
                    raise AssertionError(f"live projector failed for good: {result.failed[:2]}")
                time.sleep(0.01)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=live)

    def phases(phase: str) -> None:
        if phase == "wave-applied" and not thread.is_alive() and not stop.is_set():
            thread.start()
        if phase == "finished":
            stop.set()

    replayer = stack.replayer(name, handoff_seconds=0.8, poll_seconds=0.1, batch_size=40)
    replayer.hooks = phases
    summary = replayer.run()
    thread.join()
    assert not errors, errors
    assert summary.ok and summary.switched, summary.problems + summary.failures
    assert len(produced) > 10
    # after the switch, the live projector writes to the new table: a last command lands there too
    tail = history.run(5)
    stack.publish(tail)
    stack.live_apply(name, tail, table=resolver())
    assert read_model(stack.clients.dynamodb, summary.table) == fold(stack.specs[name], before + produced + tail)


def test_in_place_resets_and_rebuilds(stack: Stack) -> None:
    events = History(seed=8).run(250)
    deliver_live(stack, events, random.Random(8))
    archive_with_duplicates(stack.clients.s3, events, random.Random(8))
    # a bug wrote nonsense into the projection
    stack.clients.dynamodb.put_item(TableName="user_timeline",
                                    Item={"pk": {"S": "timeline#nobody"}, "sk": {"S": "x"}})
    summary = stack.replayer("user_timeline", into="in-place").run()
    assert summary.ok and not summary.switched and summary.table == "user_timeline"
    assert stack.pointer("user_timeline") is None
    assert read_model(stack.clients.dynamodb, "user_timeline") == fold(stack.specs["user_timeline"], events)


def test_shards_share_the_work_and_the_last_one_switches(stack: Stack) -> None:
    events = History(seed=6).run(300)
    archive_with_duplicates(stack.clients.s3, events, random.Random(6))
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
        def run(state: Any, item: Envelope) -> Any:
            seen.append(is_replayed(item))
            return fold(state, item)
        return run

    spy = ProjectionSpec(real.name, {kind: watching(fold) for kind, fold in real.folds.items()})
    summary = stack.replayer("user_timeline", spec=spy).run()
    assert summary.ok and seen and all(seen)
    original = events[0]
    assert not is_replayed(original) and is_replayed(mark_replayed(original))


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
