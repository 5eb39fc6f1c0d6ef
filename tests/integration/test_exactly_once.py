"""Exactly once in effect, for each projection, on the engine without checkpoints (issue 8's list).

Every projection's table must end equal to the in-memory fold of the unique events, whatever the
delivery: Kinesis re-deliveries (the same sequence numbers again, whole batches or from a failed
record on), re-sent copies of an event at new sequence numbers, a crash after any write of a
batch, events of one stream out of order across batches, streams in any order, a reshard mid-stream
(the parent drained before its children). The relay puts each event on Kinesis once
(tests/integration/test_publisher_exactly_once.py); a re-sent copy at a new position is caught all
the same: by an owned item's version, always; by a shared item's recent events (the last 24 it
took from that shard), for a copy that comes within that many of its original (shard_log puts
copies up to 15 records further on).
"""

from __future__ import annotations

import base64
import contextlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from escore.envelope import Envelope, decode
from escore.memory_projection import InMemoryProjection
from escore.projection import ProjectionSpec
from escore.readmodel import from_item
from eventstack.local.emulation import tuned_moto_dynamodb
from eventstack.topology import TOPOLOGY
from posts.projectors import hashtag_counts
from profiles.projectors import user_profiles, user_timeline
from tests.integration.projector_harness import (
    Crash,
    Mapping,
    drain,
    live,
    make_scenario,
    planned_requests,
    scan,
    shard_log,
)
from tests.integration.test_hashtag_counts import post_streams
from tests.support.aws import create_table
from tests.support.projectors import build_of, upcasters

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Case:
    name: str
    spec: ProjectionSpec
    build: Callable[..., Any]
    sources: tuple[str, ...]  # "profiles", "posts"


CASES = [
    Case("user_profiles", user_profiles.PROJECTION, build_of(user_profiles), ("profiles", "posts")),
    Case("user_timeline", user_timeline.PROJECTION, build_of(user_timeline), ("posts",)),
    Case("hashtag_counts", hashtag_counts.PROJECTION, build_of(hashtag_counts), ("posts",)),
]


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws(), tuned_moto_dynamodb():
        yield boto3.client("dynamodb", region_name="us-east-1")


def history(seed: int, users: int = 12, posts: int = 45) -> dict[str, list[list[Envelope]]]:
    """Profiles streams, and posts streams with hashtags, as the services write them."""
    rng = random.Random(seed)
    return {"profiles": make_scenario(rng, users, 0).profiles, "posts": post_streams(rng, posts)}


def expected(case: Case, streams: dict[str, list[list[Envelope]]]) -> dict[tuple[str, str], dict[str, Any]]:
    events = [e for source in case.sources for stream in streams[source] for e in stream]
    return InMemoryProjection(case.spec).apply(upcasters.upcast(e) for e in events).items


def table_items(client: Any, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {key: {n: v for n, v in from_item(item).items() if n not in ("pk", "sk")}
            for key, item in live(scan(client, table)).items()}


def create(client: Any, case: Case, suffix: str) -> str:
    return create_table(client, TOPOLOGY.projection(case.name)[1].table, f"{case.name}-{suffix}")


def new_table(client: Any, case: Case, suffix: str) -> tuple[str, Any]:
    table = create(client, case, suffix)
    return table, case.build({f"{case.name.upper()}_TABLE": table}, client=client)


def logs(case: Case, streams: dict[str, list[list[Envelope]]], rng: random.Random, **kwargs: Any
         ) -> list[list[dict[str, Any]]]:
    return [shard_log(rng, streams[source], stream=f"{source}-events", **kwargs) for source in case.sources]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("redeliver_p,copies", [(0.4, (1, 1)), (0.0, (1, 3)), (0.4, (1, 3))],
                         ids=["kinesis-redelivery", "re-sends", "both"])
def test_redeliveries_and_re_sends(dynamodb: Any, case: Case, redeliver_p: float, copies: tuple[int, int]) -> None:
    streams = history(3)
    rng = random.Random(4)
    table, handler = new_table(dynamodb, case, "a")
    batch = rng.choice([7, 20])  # copies often land in a later batch than their original
    mappings = [Mapping(handler, log, batch, rng, redeliver_p) for log in logs(case, streams, rng, copies=copies)]
    drain(mappings, rng)
    assert table_items(dynamodb, table) == expected(case, streams)


class CrashAt:
    """The real client, except that the invocation dies right after its k-th write (0: before any)."""

    def __init__(self, client: Any, k: int) -> None:
        self._client, self.k, self.writes = client, k, 0

    def _write(self, call: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        if self.k == 0:
            raise Crash("before the first write")
        try:
            return call(**kwargs)
        finally:
            self.writes += 1
            if self.writes == self.k:
                raise Crash(f"after write {self.k}")

    def put_item(self, **kwargs: Any) -> Any:
        return self._write(self._client.put_item, kwargs)

    def update_item(self, **kwargs: Any) -> Any:
        return self._write(self._client.update_item, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_crash_after_every_write_of_a_batch_then_the_redelivery(dynamodb: Any, case: Case) -> None:
    streams = history(5, users=6, posts=12)
    rng = random.Random(6)
    batches = [log[:60] for log in logs(case, streams, rng)]  # one batch per source shard
    unique = {e.event_id: e for batch in batches for e in map(_event, batch)}
    want = InMemoryProjection(case.spec).apply(
        upcasters.upcast(e) for e in sorted(unique.values(), key=lambda e: (e.stream_id, e.version))).items
    writes = planned_requests(case.spec, batches)
    assert writes > 5
    for k in range(writes + 1):
        table = create(dynamodb, case, f"crash-{k}")
        env = {f"{case.name.upper()}_TABLE": table}
        crashing = CrashAt(dynamodb, k)  # counts writes across the batches: only the k-th one dies
        for batch in batches:
            with contextlib.suppress(Crash):
                case.build(env, client=crashing)({"Records": batch}, None)
            # Lambda re-delivers the batch whole: what the crash left half done is finished, once.
            assert case.build(env, client=dynamodb)({"Records": batch}, None) == {"batchItemFailures": []}
        assert table_items(dynamodb, table) == want, f"crash after write {k} of {writes}"


def _event(record: dict[str, Any]) -> Envelope:
    return decode(base64.b64decode(record["kinesis"]["data"]))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_out_of_order_across_batches_and_any_order_of_streams(dynamodb: Any, case: Case) -> None:
    streams = history(7)
    results = []
    for seed in (8, 9):
        rng = random.Random(seed)
        table, handler = new_table(dynamodb, case, f"o{seed}")
        mappings = [Mapping(handler, log, rng.choice([5, 13]), rng, 0.2)
                    for log in logs(case, streams, rng, swap_p=0.15)]
        drain(mappings, rng)
        results.append(table_items(dynamodb, table))
    assert results[0] == results[1] == expected(case, streams)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_reshard_mid_stream_parent_drained_before_its_children(dynamodb: Any, case: Case) -> None:
    streams = history(10)
    rng = random.Random(11)
    table, handler = new_table(dynamodb, case, "reshard")
    for source in case.sources:
        # Each stream's first events on the parent shard, the rest on one of its two children.
        parent: list[list[Envelope]] = []
        children: list[list[list[Envelope]]] = [[], []]
        for stream in streams[source]:
            cut = rng.randint(0, len(stream))
            parent.append(stream[:cut])
            children[rng.randint(0, 1)].append(stream[cut:])
        name = f"{source}-events"
        parent_log = shard_log(rng, parent, stream=name)
        child_logs = [_on_shard(shard_log(rng, kid, stream=name), n + 1) for n, kid in enumerate(children)]
        drain([Mapping(handler, parent_log, 10, rng, 0.2)], rng)  # Lambda reads the parent to its end first
        drain([Mapping(handler, log, 10, rng, 0.2) for log in child_logs], rng)  # then both children
    assert table_items(dynamodb, table) == expected(case, streams)


def _on_shard(log: list[dict[str, Any]], shard: int) -> list[dict[str, Any]]:
    """The records as a child shard holds them: its own shard id, sequence numbers above the parent's."""
    out = []
    for record in log:
        sequence = int(record["kinesis"]["sequenceNumber"]) + 100_000 * shard
        out.append({**record, "eventID": f"shardId-{shard:012d}:{sequence}",
                    "kinesis": {**record["kinesis"], "sequenceNumber": str(sequence)}})
    return out


class FailingItem:
    """The real client, except that every write of one item fails (DynamoDB failing on it)."""

    def __init__(self, client: Any, pk: str) -> None:
        self._client, self.pk = client, pk

    def update_item(self, **kwargs: Any) -> Any:
        if kwargs["Key"]["pk"]["S"] == self.pk and "ConditionExpression" in kwargs and "#a0" in kwargs.get(
                "ExpressionAttributeNames", {}):
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "ValidationException", "Message": "injected"}}, "UpdateItem")
        return self._client.update_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.mark.parametrize("then", ["re-delivery", "dead-lettered and redriven"])
def test_a_failed_shared_write_takes_back_what_other_items_took_past_it(dynamodb: Any, then: str) -> None:
    """Item #a is written with deliveries 1 and 3, then item #b's write (delivery 2) fails: the batch
    is cut at 2, so #a gives back delivery 3. Whatever comes next, the re-delivery from 2 in the same
    shard or the dead-lettered range [2, 3] redriven in a namespace of its own, each is applied once."""
    from escore.engine import Delivery, Projector, position_of

    case = CASES[2]  # hashtag_counts
    table = create(dynamodb, case, f"undo-{then[:4]}")
    at = "2024-01-01T00:00:00.000000Z"

    def created(n: int, tag: str) -> Envelope:
        from tests.integration.projector_harness import envelope

        return envelope(f"post-p{n}", 1, "PostCreated", {"post_id": f"p{n}", "author_id": "u", "text": f"#{tag}"}, at)

    events = [created(1, "a"), created(2, "b"), created(3, "a")]
    shard = "posts-events:0"
    batch = [Delivery(e, shard, position_of(n)) for n, e in enumerate(events, start=1)]
    failing = Projector(case.spec, table, FailingItem(dynamodb, "tag#b"), sleep=lambda _: None)
    result = failing.apply(batch)
    assert sorted(f.event_id for f in result.failed) == sorted(e.event_id for e in events[1:])
    counts = {k[0]: v["post_count"] for k, v in table_items(dynamodb, table).items()}
    assert counts == {"tag#a": 1}  # delivery 3 taken back
    healthy = Projector(case.spec, table, dynamodb)
    if then == "re-delivery":
        assert not healthy.apply(batch[1:]).failed
    else:  # the range [2, 3] in a namespace of its own, as `eventstack dlq redrive` does
        assert not healthy.apply([Delivery(d.event, "redrive:posts-events:0:2", d.position) for d in batch[1:]]).failed
    counts = {k[0]: v["post_count"] for k, v in table_items(dynamodb, table).items()}
    assert counts == {"tag#a": 2, "tag#b": 1}
