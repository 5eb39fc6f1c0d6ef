"""The profiles projectors on moto: whatever the delivery (duplicates, re-delivered and failed
batches, crashes, out-of-order records, the order of streams), the tables end equal to the fold of
the unique events; and what that costs in DynamoDB requests."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from escore.envelope import encode_record
from escore.projection import Projector
from escore.upcasting import UpcasterRegistry
from eventstack.local.emulation import tuned_moto_dynamodb
from profiles.projectors import user_profiles, user_timeline
from profiles.readmodels import InvalidCursor, ProfileReadModel, TimelineReadModel
from tests.integration.projector_harness import (
    Expected,
    FaultyDynamoDB,
    Mapping,
    RequestCounter,
    Scenario,
    checkpoints,
    drain,
    envelope,
    expected_fold,
    kinesis_record,
    make_scenario,
    scan,
    shard_log,
)
from tests.support.aws import create_projection_table

pytestmark = pytest.mark.integration

PROFILES_TABLE = "user_profiles"
TIMELINE_TABLE = "user_timeline"


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws(), tuned_moto_dynamodb():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_projection_table(client, "user_profiles")
        create_projection_table(client, "user_timeline")
        yield client


def handlers(client: Any, profiles_table: str = PROFILES_TABLE, timeline_table: str = TIMELINE_TABLE) -> tuple[Any, Any]:
    profiles = user_profiles.build({"USER_PROFILES_TABLE": profiles_table}, client=client)
    timeline = user_timeline.build({"USER_TIMELINE_TABLE": timeline_table}, client=client)
    return profiles, timeline


def run(scenario: Scenario, profiles_handler: Any, timeline_handler: Any, rng: random.Random, *,
        batch_size: int, redeliver_p: float, swap_p: float) -> list[Mapping]:
    """Three mappings, as the topology subscribes them: user_profiles from both streams,
    user_timeline from posts; each shard log holds every event one to three times."""
    profiles_log = shard_log(rng, scenario.profiles, swap_p=swap_p)
    posts_log = shard_log(rng, scenario.posts, swap_p=swap_p)
    mappings = [
        Mapping(profiles_handler, profiles_log, batch_size, rng, redeliver_p),
        Mapping(profiles_handler, posts_log, batch_size, rng, redeliver_p),
        Mapping(timeline_handler, posts_log, batch_size, rng, redeliver_p),
    ]
    drain(mappings, rng)
    return mappings


def assert_matches_fold(client: Any, expected: Expected, profiles_table: str = PROFILES_TABLE,
                        timeline_table: str = TIMELINE_TABLE) -> None:
    profiles = ProfileReadModel(profiles_table, client)
    timeline = TimelineReadModel(timeline_table, client)
    for user, profile in expected.profiles.items():
        assert profiles.profile(user) == profile, user
        assert profiles.post_count(user) == expected.post_counts[user], user
        pages: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            items, cursor = timeline.page(user, 7, cursor)
            pages.extend(items)
            if cursor is None:
                break
            assert len(items) == 7
        assert pages == expected.timelines[user], user
    # Nothing more in the tables than the fold has: one timeline item per live post, and every
    # source stream checkpointed at its last version.
    timeline_items = scan(client, timeline_table)
    assert sum(1 for (pk, _) in timeline_items if not pk.startswith("$")) == \
        sum(len(entries) for entries in expected.timelines.values())
    posts_last = {sid: v for sid, v in expected.last_versions.items() if sid.startswith("post-")}
    assert checkpoints(timeline_items) == posts_last
    assert checkpoints(scan(client, profiles_table)) == expected.last_versions


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_faulty_delivery_ends_equal_to_the_fold(dynamodb: Any, seed: int) -> None:
    rng = random.Random(seed)
    scenario = make_scenario(rng, users=25, posts=90)
    faulty = FaultyDynamoDB(dynamodb, rng, fail_p=0.15, ambiguous_p=0.05, crash_p=0.05, read_fail_p=0.03)
    profiles_handler, timeline_handler = handlers(faulty)
    mappings = run(scenario, profiles_handler, timeline_handler, rng,
                   batch_size=rng.choice([10, 25, 40]), redeliver_p=0.2, swap_p=0.08)
    assert faulty.injected["failed"] and faulty.injected["ambiguous"]  # the faults did happen
    assert any(m.reported_failures for m in mappings)
    assert_matches_fold(dynamodb, expected_fold(scenario))


def test_the_order_of_delivery_does_not_change_the_tables(dynamodb: Any) -> None:
    scenario = make_scenario(random.Random(7), users=15, posts=50)
    tables = []
    for seed, suffix in ((11, "a"), (12, "b")):
        rng = random.Random(seed)
        names = (f"profiles-{suffix}", f"timeline-{suffix}")
        create_table_like(dynamodb, "user_profiles", names[0])
        create_table_like(dynamodb, "user_timeline", names[1])
        faulty = FaultyDynamoDB(dynamodb, rng, fail_p=0.1, crash_p=0.05)
        run(scenario, *handlers(faulty, *names), rng, batch_size=rng.choice([5, 30, 100]),
            redeliver_p=0.3, swap_p=0.1)
        assert_matches_fold(dynamodb, expected_fold(scenario), *names)
        tables.append((scan(dynamodb, names[0]), scan(dynamodb, names[1])))
    assert tables[0] == tables[1]  # item for item, checkpoints included


def create_table_like(client: Any, projection: str, name: str) -> None:
    from eventstack.topology import TOPOLOGY
    from tests.support.aws import create_table

    create_table(client, TOPOLOGY.projection(projection)[1].table, name)


def test_dynamodb_requests_per_1000_projected_events(dynamodb: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """THE NUMBER: DynamoDB write requests per 1,000 projected events under duplicate delivery
    (printed as `[projector cost] ...`, shown even without -s).

    Every event is on its shard one to three times and 20% of batches are delivered twice; batches
    of 100 (the topology's PROJECTOR_MAPPING). A projected event is a unique event a projector
    consumed. Per batch the engine makes one consistent BatchGetItem of its streams' checkpoints
    and ceil(items / 100) TransactWriteItems, where items = streams touched + distinct read-model
    keys after coalescing; a batch of nothing but duplicates writes nothing.
    """
    rng = random.Random(1000)
    scenario = make_scenario(rng, users=60, posts=430)
    profiles_handler, timeline_handler = handlers(dynamodb)
    counter = RequestCounter(dynamodb)
    profiles_log, posts_log = shard_log(rng, scenario.profiles), shard_log(rng, scenario.posts)
    runs = (
        ("user_profiles", len(scenario.events), [Mapping(profiles_handler, profiles_log, 100, rng, 0.2),
                                                 Mapping(profiles_handler, posts_log, 100, rng, 0.2)]),
        ("user_timeline", sum(len(s) for s in scenario.posts), [Mapping(timeline_handler, posts_log, 100, rng, 0.2)]),
    )
    lines, per_1000 = [], {}
    for name, unique, mappings in runs:
        counter.reset()
        drain(mappings, rng)
        records = sum(len(m.records) for m in mappings)
        writes, reads = 1000 * counter.writes / unique, 1000 * counter.reads / unique
        per_1000[name] = (writes, reads)
        lines.append(
            f"[projector cost] {name}: {writes:.1f} DynamoDB write requests and {reads:.1f} read requests "
            f"per 1,000 projected events ({unique} unique events in {records} Kinesis records, "
            f"{sum(m.invocations for m in mappings)} invocations; calls {dict(counter.calls)}; "
            f"{1000 * counter.transact_items / unique:.0f} transaction items per 1,000 events)")
    assert_matches_fold(dynamodb, expected_fold(scenario))
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    for name, (writes, reads) in per_1000.items():
        # Floor: 1,000 events / 100 per batch = 10 batches; the shard holds ~2x the records and 20% of
        # batches come twice: ~25 invocations per 1,000 events, each with one BatchGetItem and one or
        # two transactions (two when a batch touches more than 100 items), none if all duplicates.
        # 60 leaves room; one request per event (no batching) would be 1,000.
        assert writes <= 60, name
        assert reads <= 40, name


def test_bad_records_are_reported_or_skipped_and_never_crash_the_batch(dynamodb: Any) -> None:
    registry = UpcasterRegistry()  # this code reads PostCreated at schema 1 only
    projector = Projector(user_profiles.PROJECTION, PROFILES_TABLE, dynamodb, upcaster=registry)
    from escore.projection import kinesis_handler

    handle = kinesis_handler(projector)
    user, post_ok, post_new = "u-1", "p-ok", "p-new"
    at = "2024-01-01T00:00:00.000000Z"
    good = envelope(f"post-{post_ok}", 1, "PostCreated", {"post_id": post_ok, "author_id": user, "text": "x"}, at)
    unknown = envelope(f"post-{post_ok}", 2, "PostPinned", {}, at)
    after_unknown = envelope(f"post-{post_ok}", 3, "PostDeleted", {}, at)
    too_new = envelope(f"post-{post_new}", 1, "PostCreated", {"post_id": post_new, "author_id": user, "text": "y"},
                       at, schema_version=2)
    behind_too_new = envelope(f"post-{post_new}", 2, "PostEdited", {"text": "z"}, at)
    gap = envelope("post-gap", 2, "PostEdited", {"text": "z"}, at)  # v1 never delivered
    bad_data = envelope("post-bad", 1, "PostCreated", {"post_id": "p"}, at)  # no author_id
    records = [
        kinesis_record(1, encode_record(good), good.stream_id),
        kinesis_record(2, b"not json at all\n", "x"),
        kinesis_record(3, encode_record(too_new), too_new.stream_id),
        kinesis_record(4, encode_record(unknown), unknown.stream_id),
        kinesis_record(5, b'{"event_id": "e"}\n', "x"),  # JSON, not an envelope
        kinesis_record(6, encode_record(behind_too_new), behind_too_new.stream_id),
        kinesis_record(7, encode_record(after_unknown), after_unknown.stream_id),
        kinesis_record(8, encode_record(gap), gap.stream_id),
        kinesis_record(9, encode_record(bad_data), bad_data.stream_id),
    ]
    records[1]["kinesis"]["data"] = "%%%not base64"
    response = handle({"Records": records}, None)
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == ["2", "3", "5", "6", "8", "9"]
    # The good stream went through, past its unknown event, to its deletion.
    assert projector.checkpoint(good.stream_id) == 3
    assert ProfileReadModel(PROFILES_TABLE, dynamodb).post_count(user) == 0
    assert projector.checkpoint(too_new.stream_id) == 0
    result = projector.apply([too_new, behind_too_new, gap])
    reasons = {f.event_id: f.reason for f in result.failed}
    assert reasons[too_new.event_id].startswith("schema too new")
    assert reasons[behind_too_new.event_id].startswith("behind a failed predecessor")
    assert reasons[gap.event_id].startswith("ahead of a missing predecessor")


def test_replay_into_a_fresh_table_and_again_changes_nothing(dynamodb: Any) -> None:
    """The replay tool's path: Projector.apply on plain envelopes, no Kinesis."""
    rng = random.Random(5)
    scenario = make_scenario(rng, users=10, posts=40)
    counter = RequestCounter(dynamodb)
    events = scenario.events
    rng.shuffle(events)  # any order across and within streams: apply sorts each stream itself
    profiles = Projector(user_profiles.PROJECTION, PROFILES_TABLE, dynamodb)
    timeline = Projector(user_timeline.PROJECTION, TIMELINE_TABLE, dynamodb)
    first = profiles.apply(events + events[:30])
    timeline.apply([e for e in events if e.service == "posts"])  # what it subscribes to
    assert not first.failed
    assert first.applied + first.skipped == len(events) and first.duplicates == 30
    assert_matches_fold(dynamodb, expected_fold(scenario))
    before = (scan(dynamodb, PROFILES_TABLE), scan(dynamodb, TIMELINE_TABLE))
    counter.reset()
    again = profiles.apply(events)
    assert (again.applied, again.duplicates, again.failed) == (0, len(events), [])
    assert counter.writes == 0
    assert (scan(dynamodb, PROFILES_TABLE), scan(dynamodb, TIMELINE_TABLE)) == before


def test_many_events_per_key_split_into_several_transactions(dynamodb: Any) -> None:
    at = "2024-01-01T00:00:00.000000Z"
    author = "prolific"
    events = [
        envelope(f"post-{i}", 1, "PostCreated", {"post_id": f"p{i:03d}", "author_id": author, "text": "x"}, at)
        for i in range(230)
    ]
    counter = RequestCounter(dynamodb)
    projector = Projector(user_profiles.PROJECTION, PROFILES_TABLE, dynamodb)
    result = projector.apply(events)
    assert (result.applied, result.failed) == (230, [])
    assert ProfileReadModel(PROFILES_TABLE, dynamodb).post_count(author) == 230
    # 230 checkpoints + 1 coalesced profile item per transaction: 99 streams per transaction.
    assert counter.calls["TransactWriteItems"] == 3
    items, cursor = TimelineReadModel(TIMELINE_TABLE, dynamodb).page(author, 5, None)
    assert (items, cursor) == ([], None)


def test_a_stale_read_is_caught_by_the_checkpoint_condition_and_retried(dynamodb: Any) -> None:
    """Two projectors race on the same events: each event is applied once, not twice."""
    at = "2024-01-01T00:00:00.000000Z"
    events = [envelope(f"post-{i}", 1, "PostCreated", {"post_id": f"p{i}", "author_id": "a", "text": "x"}, at)
              for i in range(5)]
    rival = Projector(user_profiles.PROJECTION, PROFILES_TABLE, dynamodb)

    class RacingClient:
        raced = False

        def transact_write_items(self, **kwargs: Any) -> Any:
            if not self.raced:  # the rival commits between our read and our write
                self.raced = True
                assert rival.apply(events).applied == 5
            return dynamodb.transact_write_items(**kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(dynamodb, name)

    result = Projector(user_profiles.PROJECTION, PROFILES_TABLE, RacingClient(), sleep=lambda _: None).apply(events)
    assert (result.applied, result.duplicates, result.failed) == (0, 5, [])
    assert ProfileReadModel(PROFILES_TABLE, dynamodb).post_count("a") == 5


def test_timeline_pages_and_cursor(dynamodb: Any) -> None:
    at = "2024-01-01T00:00:0{}.000000Z"
    events = [envelope(f"post-{i}", 1, "PostCreated", {"post_id": f"p{i}", "author_id": "a", "text": str(i)},
                       at.format(i // 2)) for i in range(9)]  # pairs share a created_at
    Projector(user_timeline.PROJECTION, TIMELINE_TABLE, dynamodb).apply(events)
    timeline = TimelineReadModel(TIMELINE_TABLE, dynamodb)
    first, cursor = timeline.page("a", 4, None)
    assert [i["post_id"] for i in first] == ["p8", "p7", "p6", "p5"]
    assert cursor is not None
    second, cursor = timeline.page("a", 4, cursor)
    assert [i["post_id"] for i in second] == ["p4", "p3", "p2", "p1"]
    last, cursor = timeline.page("a", 4, cursor)
    assert ([i["post_id"] for i in last], cursor) == (["p0"], None)
    exact, cursor = timeline.page("a", 9, None)
    assert len(exact) == 9 and cursor is None
    assert timeline.page("nobody", 10, None) == ([], None)
    with pytest.raises(InvalidCursor):
        timeline.page("a", 4, "garbage")


def test_an_event_ahead_of_its_predecessor_fails_until_the_predecessor_comes(dynamodb: Any) -> None:
    """A stream's v2 at the end of one batch, its v1 in the next: v2 is failed (not skipped, not
    applied), Lambda re-delivers from v2, and that batch holds both."""
    at = "2024-01-01T00:00:00.000000Z"
    created = envelope("post-x", 1, "PostCreated", {"post_id": "x", "author_id": "a", "text": "one"}, at)
    edited = envelope("post-x", 2, "PostEdited", {"text": "two"}, at)
    others = [envelope(f"post-{i}", 1, "PostCreated", {"post_id": f"o{i}", "author_id": "b", "text": "-"}, at)
              for i in range(4)]
    order = [*others[:3], edited, created, others[3]]
    log = [kinesis_record(seq, encode_record(e), e.stream_id) for seq, e in enumerate(order, start=1)]
    _, timeline_handler = handlers(dynamodb)
    first = timeline_handler({"Records": log[:4]}, None)
    assert first == {"batchItemFailures": [{"itemIdentifier": "4"}]}
    mapping = Mapping(timeline_handler, log, 4, random.Random(0), position=3)
    drain([mapping], random.Random(0))
    assert mapping.invocations == 1  # from v2: [v2, v1, o3], done
    items, _ = TimelineReadModel(TIMELINE_TABLE, dynamodb).page("a", 10, None)
    assert items == [{"post_id": "x", "text": "two", "created_at": at}]
