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

from escore.cursors import InvalidCursor
from escore.engine import Projector
from escore.envelope import encode_record
from escore.upcasting import UpcasterRegistry
from eventstack.local.emulation import tuned_moto_dynamodb
from profiles.projectors import user_profiles, user_timeline
from profiles.readmodels import ProfileReadModel, TimelineReadModel
from tests.integration.projector_harness import (
    Expected,
    FaultyDynamoDB,
    Mapping,
    RequestCounter,
    Scenario,
    deliveries,
    drain,
    envelope,
    expected_fold,
    kinesis_record,
    live,
    make_scenario,
    planned_requests,
    scan,
    shard_log,
    versions,
)
from tests.support.aws import create_projection_table
from tests.support.projectors import build_of

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
    profiles = build_of(user_profiles)({"USER_PROFILES_TABLE": profiles_table}, client=client)
    timeline = build_of(user_timeline)({"USER_TIMELINE_TABLE": timeline_table}, client=client)
    return profiles, timeline


def run(scenario: Scenario, profiles_handler: Any, timeline_handler: Any, rng: random.Random, *,
        batch_size: int, redeliver_p: float, swap_p: float) -> list[Mapping]:
    """Three mappings, as the topology subscribes them: user_profiles from both streams,
    user_timeline from posts; each shard log holds every event once (Mapping re-delivers)."""
    profiles_log = shard_log(rng, scenario.profiles, stream="profiles-events", swap_p=swap_p)
    posts_log = shard_log(rng, scenario.posts, stream="posts-events", swap_p=swap_p)
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
    # Nothing more in the tables than the fold has: one timeline item per live post (a deleted
    # one's tombstone aside), no checkpoint items, and every owned item at its stream's last version.
    timeline_items = scan(client, timeline_table)
    assert len(live(timeline_items)) == sum(len(entries) for entries in expected.timelines.values())
    assert not any(pk.startswith("$") for pk, _ in timeline_items)
    posts_last = {sid: v for sid, v in expected.last_versions.items() if sid.startswith("post-")}
    assert sorted(versions(timeline_items).values()) == sorted(posts_last.values())
    profile_items = scan(client, profiles_table)
    owned = versions(profile_items)
    assert set(owned) == {user_profiles.profile_key(u) for u, p in expected.profiles.items() if p is not None}
    assert all(owned[user_profiles.profile_key(u)] == expected.profile_versions[u]
               for u, p in expected.profiles.items() if p is not None)


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
    assert live(tables[0][0]) == live(tables[1][0])  # item for item (watermarks aside)
    assert live(tables[0][1]) == live(tables[1][1])


def create_table_like(client: Any, projection: str, name: str) -> None:
    from eventstack.topology import TOPOLOGY
    from tests.support.aws import create_table

    create_table(client, TOPOLOGY.projection(projection)[1].table, name)


def test_one_write_per_changed_item_per_batch_and_no_reads(dynamodb: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """THE NUMBER: DynamoDB requests per 1,000 projected events (printed as `[projector cost] ...`).

    Batches of 100 (the topology's PROJECTOR_MAPPING), each event once on its shard. The engine
    reads nothing and makes exactly one conditional write per owned item and per (shared item,
    shard) a batch changes, after coalescing: `planned_requests` counts them from the folds. A
    re-delivered batch costs one (failing, so unchanged) conditional write per item again.
    """
    rng = random.Random(1000)
    scenario = make_scenario(rng, users=60, posts=430)
    profiles_handler, timeline_handler = handlers(dynamodb)
    counter = RequestCounter(dynamodb)
    profiles_log = shard_log(rng, scenario.profiles, stream="profiles-events")
    posts_log = shard_log(rng, scenario.posts, stream="posts-events")
    runs = (
        ("user_profiles", user_profiles.PROJECTION, len(scenario.events),
         [Mapping(profiles_handler, profiles_log, 100, rng), Mapping(profiles_handler, posts_log, 100, rng)]),
        ("user_timeline", user_timeline.PROJECTION, sum(len(s) for s in scenario.posts),
         [Mapping(timeline_handler, posts_log, 100, rng)]),
    )
    lines = []
    for name, spec, unique, mappings in runs:
        counter.reset()
        drain(mappings, rng)
        planned = planned_requests(spec, [m.records[i:i + 100] for m in mappings for i in range(0, len(m.records), 100)])
        assert counter.writes == planned, name
        assert counter.reads == 0 and counter.calls["TransactWriteItems"] == 0, name
        lines.append(f"[projector cost] {name}: {1000 * counter.writes / unique:.1f} DynamoDB write requests and "
                     f"{1000 * counter.reads / unique:.1f} read requests per 1,000 projected events "
                     f"({unique} events, batches of 100; calls {dict(counter.calls)})")
    assert_matches_fold(dynamodb, expected_fold(scenario))
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def test_bad_records_cut_their_shard_and_are_reported_never_crashing_the_batch(dynamodb: Any) -> None:
    registry = UpcasterRegistry()  # this code reads PostCreated at schema 1 only
    projector = Projector(user_profiles.PROJECTION, PROFILES_TABLE, dynamodb, upcaster=registry)
    from escore.projector_lambda import kinesis_handler

    handle = kinesis_handler(projector)
    user, post_ok, post_new = "u-1", "p-ok", "p-new"
    at = "2024-01-01T00:00:00.000000Z"
    good = envelope(f"post-{post_ok}", 1, "PostCreated", {"post_id": post_ok, "author_id": user, "text": "x"}, at)
    unknown = envelope(f"post-{post_ok}", 2, "PostPinned", {}, at)
    after_unknown = envelope(f"post-{post_ok}", 3, "PostDeleted", {"author_id": user, "created_at": at, "tags": []},
                             at, schema_version=1)
    too_new = envelope(f"post-{post_new}", 1, "PostCreated", {"post_id": post_new, "author_id": user, "text": "y"},
                       at, schema_version=2)
    gap = envelope("post-gap", 2, "PostEdited", {"text": "z", "author_id": user, "created_at": at}, at,
                   schema_version=1)  # v1 never delivered
    bad_data = envelope("post-bad", 1, "PostCreated", {"post_id": "p"}, at)  # no author_id
    records = [
        kinesis_record(1, encode_record(good), good.stream_id),
        kinesis_record(2, encode_record(unknown), unknown.stream_id),
        kinesis_record(3, encode_record(after_unknown), after_unknown.stream_id),
        kinesis_record(4, b"not json at all\n", "x"),
        kinesis_record(5, encode_record(too_new), too_new.stream_id),
    ]
    records[3]["kinesis"]["data"] = "%%%not base64"
    # A record no retry can apply fails the invocation (Lambda bisects until it is alone and
    # dead-letters it alone), after what comes before it in its shard is written; nothing after it
    # is written: it could touch the same items.
    from escore.projector_lambda import PoisonedBatch

    with pytest.raises(PoisonedBatch, match="1 undecodable record"):
        handle({"Records": records}, None)
    # The good stream went through, past its unknown event, to its deletion; the record after the
    # poison (too_new, which this code cannot read either) was not touched.
    assert ProfileReadModel(PROFILES_TABLE, dynamodb).post_count(user) == 0
    with pytest.raises(PoisonedBatch, match="schema too new"):
        handle({"Records": records[4:]}, None)
    assert handle({"Records": records[:3]}, None) == {"batchItemFailures": []}  # again: all duplicates
    # Each kind of bad event, alone in its namespace: reported with its reason, and the namespace cut there.
    for bad, reason in ((too_new, "schema too new"), (bad_data, "projection user_profiles cannot apply it")):
        later = envelope("post-later", 1, "PostCreated", {"post_id": "l", "author_id": "w", "text": "x"}, at)
        result = projector.apply(deliveries([bad, later], namespace=f"ns-{bad.event_id}"))
        reasons = {f.event_id: f.reason for f in result.failed}
        assert reasons[bad.event_id].startswith(reason), reasons
        assert reasons[later.event_id].startswith("behind a failed delivery")
        assert [f.poison for f in result.failed] == [True, False]
    timeline = Projector(user_timeline.PROJECTION, TIMELINE_TABLE, dynamodb)
    result = timeline.apply(deliveries([gap]))
    assert result.failed[0].reason.startswith("ahead of a missing predecessor") and not result.failed[0].poison
    assert ProfileReadModel(PROFILES_TABLE, dynamodb).post_count("w") == 0


def test_a_batch_again_changes_nothing_and_costs_one_failed_condition_per_item(dynamodb: Any) -> None:
    rng = random.Random(5)
    scenario = make_scenario(rng, users=10, posts=40)
    counter = RequestCounter(dynamodb)
    events = scenario.events
    rng.shuffle(events)  # any order across streams; within a stream apply sorts owned writes by version
    profiles = Projector(user_profiles.PROJECTION, PROFILES_TABLE, dynamodb)
    timeline = Projector(user_timeline.PROJECTION, TIMELINE_TABLE, dynamodb)
    batch = deliveries(events)
    first = profiles.apply(batch + batch[:30])  # the first 30 twice in one call
    timeline.apply(deliveries([e for e in events if e.service == "posts"], namespace="posts:0"))
    assert not first.failed
    assert first.applied + first.skipped == len(events) and first.duplicates == 30
    assert_matches_fold(dynamodb, expected_fold(scenario))
    before = (scan(dynamodb, PROFILES_TABLE), scan(dynamodb, TIMELINE_TABLE))
    counter.reset()
    again = profiles.apply(batch)
    assert again.applied == 0 and again.failed == []
    assert again.duplicates + again.skipped == len(events)
    # One conditional write per owned item, each refused; none for the shared items (a profile is
    # both): this projector wrote them and remembers the events they took last (their `_r#` tags).
    assert counter.writes == len(versions(before[0]))
    counter.reset()
    fresh = Projector(user_profiles.PROJECTION, PROFILES_TABLE, dynamodb)  # another container: no memory
    assert fresh.apply(batch).applied == 0
    shared = sum(1 for item in before[0].values() if any(n.startswith("_w#") for n in item))
    assert counter.writes == len(versions(before[0])) + shared
    assert (scan(dynamodb, PROFILES_TABLE), scan(dynamodb, TIMELINE_TABLE)) == before


def test_many_events_of_one_shared_item_are_one_write(dynamodb: Any) -> None:
    at = "2024-01-01T00:00:00.000000Z"
    author = "prolific"
    events = [
        envelope(f"post-{i}", 1, "PostCreated", {"post_id": f"p{i:03d}", "author_id": author, "text": "x"}, at)
        for i in range(230)
    ]
    counter = RequestCounter(dynamodb)
    projector = Projector(user_profiles.PROJECTION, PROFILES_TABLE, dynamodb)
    result = projector.apply(deliveries(events))
    assert (result.applied, result.failed) == (230, [])
    assert counter.calls == {"UpdateItem": 1}  # ADD post_count 230, and the shard's watermark
    assert ProfileReadModel(PROFILES_TABLE, dynamodb).post_count(author) == 230
    items, cursor = TimelineReadModel(TIMELINE_TABLE, dynamodb).page(author, 5, None)
    assert (items, cursor) == ([], None)


def test_a_rival_that_wrote_first_is_caught_by_the_item_condition(dynamodb: Any) -> None:
    """Two projectors race on the same deliveries: each event is applied once, not twice."""
    at = "2024-01-01T00:00:00.000000Z"
    events = [envelope(f"post-{i}", 1, "PostCreated", {"post_id": f"p{i}", "author_id": "a", "text": "x"}, at)
              for i in range(5)]
    batch = deliveries(events)
    rival = Projector(user_profiles.PROJECTION, PROFILES_TABLE, dynamodb)

    class RacingClient:
        raced = False

        def update_item(self, **kwargs: Any) -> Any:
            if not self.raced:  # the rival commits just before our write
                self.raced = True
                assert rival.apply(batch).applied == 5
            return dynamodb.update_item(**kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(dynamodb, name)

    result = Projector(user_profiles.PROJECTION, PROFILES_TABLE, RacingClient(), sleep=lambda _: None).apply(batch)
    assert (result.applied, result.duplicates, result.failed) == (0, 5, [])
    assert ProfileReadModel(PROFILES_TABLE, dynamodb).post_count("a") == 5


def test_timeline_pages_and_cursor(dynamodb: Any) -> None:
    at = "2024-01-01T00:00:0{}.000000Z"
    events = [envelope(f"post-{i}", 1, "PostCreated", {"post_id": f"p{i}", "author_id": "a", "text": str(i)},
                       at.format(i // 2)) for i in range(9)]  # pairs share a created_at
    Projector(user_timeline.PROJECTION, TIMELINE_TABLE, dynamodb).apply(deliveries(events))
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
    edited = envelope("post-x", 2, "PostEdited", {"text": "two", "tags": [], "author_id": "a", "created_at": at,
                                                  "previous_tags": []}, at)
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
