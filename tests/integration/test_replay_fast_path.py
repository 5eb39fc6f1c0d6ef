"""The replay worker's fast path folds exactly what the checked path folds (docs/replay.md).

The fast path (escore.replay_file's one-loop reader, `TableFold.apply_stream` with the decode
inlined, the per-class constructor of `DomainEvent.from_data`, stored tags) against the path it
replaced: every envelope through the full check (`_from_dict_checked`) and marked with
`mark_replayed` (a copy), every event decoded by `ProjectionSpec.decode` through the class's
`__init__` (`from_data_checked`) and folded with `TableFold.apply`. Same archive (bench/replay.py's
generator, with duplicates, the plan of the local engine), same items; and, written into moto
tables by `fold_plan_file` and by `write_fold`, the same tables.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from moto import mock_aws

from bench.replay import generate, plan, plan_items
from escore.aggregate import DomainEvent, constructor_of
from escore.contract import registry_of_events
from escore.envelope import Envelope, _from_dict_checked
from escore.projection import Decoded, ProjectionSpec, mark_replayed
from escore.rebuild import TableFold, write_fold
from escore.replay_file import (
    FileResult,
    PlanItem,
    _batches,
    _Reader,
    cut_marks,
    fold_plan_file,
    rebuild_namespace,
)
from escore.upcasting import UpcasterRegistry
from escore.writes import EXPIRES_ATTRIBUTE
from eventstack.local.emulation import tuned_moto_dynamodb
from posts.contract import PostCreated, PostDeleted, PostEdited, hashtags
from profiles.contract import DisplayNameChanged, UserRegistered
from profiles.projectors.user_profiles import PROJECTION as USER_PROFILES
from profiles.projectors.user_timeline import PROJECTION as USER_TIMELINE

pytestmark = pytest.mark.integration

SPECS = {"user_profiles": USER_PROFILES, "user_timeline": USER_TIMELINE}
CLASSES: list[type[DomainEvent]] = [PostCreated, PostEdited, PostDeleted, UserRegistered, DisplayNameChanged]


@dataclasses.dataclass(frozen=True)
class CheckedSpec(ProjectionSpec):
    """The projection decoded as before the fast path: the class's `__init__` for every event."""

    def decode(self, envelope: Envelope, upcaster: UpcasterRegistry | None = None) -> Decoded | None:
        found = self.by_type.get(envelope.type)
        if found is None:
            return None
        event_class, fold = found
        current = (upcaster or self.registry).upcast(envelope)
        return Decoded(event_class.from_data_checked(current.data), current, fold)


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> list[PlanItem]:
    root = tmp_path_factory.mktemp("archive")
    generate(root, 6_000, seed=7)
    out = root / "plan"
    plan(root, out, 2)
    return plan_items(out, 2)


def _checked_fold(item: PlanItem, spec: ProjectionSpec) -> TableFold:
    """The old path: read, check, copy-mark, one copy per (stream, version), `TableFold.apply`."""
    fold = TableFold(CheckedSpec(spec.name, spec.folds))
    events: list[Envelope] = []
    for key in item.keys:
        with open(key, "rb") as stream:
            for batch in _batches(stream):
                events += [mark_replayed(_from_dict_checked(orjson.loads(line))) for line in batch]
    events.sort(key=lambda e: (e.stream_id, e.version))
    seen: set[tuple[str, int]] = set()
    unique = []
    for event in events:
        if (event.stream_id, event.version) not in seen:
            seen.add((event.stream_id, event.version))
            unique.append(event)
    fold.apply(unique)
    return fold


def _fast_fold(item: PlanItem, spec: ProjectionSpec) -> TableFold:
    """The new path, as `fold_plan_file` runs it (the reader, then `apply_stream` stream by stream)."""
    fold = TableFold(spec)
    reader = _Reader(FileResult(item.index, item.count))
    with contextlib.ExitStack() as files:
        sources = [(key, files.enter_context(open(key, "rb"))) for key in item.keys]
        for stream_id, events in reader.streams(sources):
            fold.apply_stream(stream_id, events)
            fold.forget((stream_id,))
    assert not (reader.bad_lines or reader.conflicts or reader.disorder)
    return fold


def _owned(fold: TableFold) -> dict[Any, Any]:
    return {key: (item.write, item.version, item.stream_id) for key, item in fold.owned.items()}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_fast_fold_makes_the_same_items(planned: list[PlanItem], name: str) -> None:
    for item in planned:
        old, new = _checked_fold(item, SPECS[name]), _fast_fold(item, SPECS[name])
        assert old.stats.folded > 0
        assert _owned(new) == _owned(old)
        assert new.shared == old.shared
        assert dataclasses.astuple(new.stats) == dataclasses.astuple(old.stats)
        assert new.versions == old.versions


def test_apply_stream_equals_apply_on_gaps_duplicates_and_failures() -> None:
    def envelope(stream: str, version: int, type_: str, data: dict[str, Any]) -> Envelope:
        return Envelope(f"{stream}-{version}-{type_}", stream, version, type_,
                        {"PostCreated": 2, "PostEdited": 3, "PostDeleted": 2}.get(type_, 1), "posts",
                        "2025-11-01T00:00:00.000000Z", data, {"correlation_id": "c"})

    post = {"post_id": "p1", "author_id": "u1", "text": "hi #a", "tags": ["a"]}
    streams = {
        "post-p1": [envelope("post-p1", 1, "PostCreated", post), envelope("post-p1", 1, "PostCreated", post),
                    envelope("post-p1", 2, "PostEdited", {"text": "#b", "tags": ["b"]}),
                    envelope("post-p1", 3, "Unknown", {}), envelope("post-p1", 4, "PostDeleted", {"author_id": "u1"})],
        "post-p2": [envelope("post-p2", 1, "PostCreated", {**post, "post_id": "p2"}),
                    envelope("post-p2", 3, "PostDeleted", {"author_id": "u1"})],  # a gap
        "post-p3": [envelope("post-p3", 1, "PostCreated", {"post_id": "p3", "text": "x"}),  # no author: fails
                    envelope("post-p3", 2, "PostDeleted", {})],
    }
    for spec in SPECS.values():
        old, new = TableFold(CheckedSpec(spec.name, spec.folds)), TableFold(spec)
        for stream_id, events in streams.items():
            old.apply(events)
            new.apply_stream(stream_id, events)
        assert _owned(new) == _owned(old) and new.shared == old.shared
        assert dataclasses.astuple(new.stats) == dataclasses.astuple(old.stats)
        assert (new.versions, new.states, new.broken) == (old.versions, old.states, old.broken)


def _datas(cls: type[DomainEvent]) -> Iterator[dict[str, Any]]:
    fields = {f.name: f"v-{f.name}" for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if "text" in fields:
        fields["text"] = "a #Tag and #other (#x) a#b"
    yield fields
    yield {**fields, "a_field_added_later": 1}
    if issubclass(cls, PostCreated | PostEdited):
        yield {**fields, "tags": hashtags(fields["text"])}
        yield {**fields, "tags": hashtags(fields["text"]), "unknown": True}
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]  # type: ignore[arg-type]
    if required:
        yield {name: value for name, value in fields.items() if name != required[0]}  # __init__'s TypeError


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.type)
def test_the_cached_constructor_equals_init(cls: type[DomainEvent]) -> None:
    construct = constructor_of(cls)
    assert construct is not cls.from_data_checked  # these are plain frozen dataclasses: the fast constructor
    for data in _datas(cls):
        try:
            expected = cls.from_data_checked(data)
        except TypeError as exc:
            with pytest.raises(TypeError, match=str(exc).split("(")[0].split(".")[-1][:20]):
                construct(data)
            continue
        got = construct(data)
        assert type(got) is cls and got == expected and hash(got) == hash(expected)
        assert got.to_data() == expected.to_data()
        assert repr(got) == repr(expected)
        assert cls.from_data(data) == expected
        with pytest.raises(dataclasses.FrozenInstanceError):
            got.text = "changed"  # type: ignore[attr-defined]


def test_stored_tags_are_kept_and_missing_ones_computed() -> None:
    data = {"post_id": "p", "author_id": "u", "text": "#one #Two"}
    assert PostCreated.from_data({**data, "tags": ["one", "two"]}).tags == ["one", "two"]  # type: ignore[attr-defined]
    assert PostCreated.from_data(data).tags == ["one", "two"]  # type: ignore[attr-defined]
    assert PostCreated(post_id="p", author_id="u", text="#one #Two").tags == ["one", "two"]
    assert PostEdited.from_data({"text": "#three"}).tags == ["three"]  # type: ignore[attr-defined]
    # an upcast schema-1 event gets its tags from the step (hashtags), the same as a current one
    registry = registry_of_events([PostCreated])
    old = Envelope("e", "post-p", 1, "PostCreated", 1, "posts", "2025-11-01T00:00:00.000000Z", data, {})
    assert PostCreated.from_data(registry.upcast(old).data).tags == ["one", "two"]  # type: ignore[attr-defined]


def _scan(client: Any, table: str) -> list[dict[str, Any]]:
    items = client.scan(TableName=table, ConsistentRead=True)["Items"]
    return sorted(items, key=lambda i: (i["pk"]["S"], i["sk"]["S"]))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_tables_written_are_identical(planned: list[PlanItem], name: str, tmp_path: Path) -> None:
    spec = SPECS[name]
    with mock_aws(), tuned_moto_dynamodb():
        client = boto3.client("dynamodb", region_name="us-east-1")
        for table in ("fast", "checked"):
            client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                           {"AttributeName": "sk", "KeyType": "RANGE"}],
                                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                                      {"AttributeName": "sk", "AttributeType": "S"}])
        for item in planned:
            fast = item.model_copy(update={"table": "fast", "projection": name})
            result = fold_plan_file(fast, client, lambda key: open(key, "rb"), spec=spec, write_workers=1)  # noqa: SIM115
            assert result.status == "done", result.problems
            old = _checked_fold(item, spec)
            space, marks = rebuild_namespace(item.index, item.count), cut_marks(item.cuts)
            write_fold(old, client, "checked", space, marks, workers=1)
        fast_items = [i for i in _scan(client, "fast") if not i["pk"]["S"].startswith("$replay#")]
        checked_items = _scan(client, "checked")
        assert fast_items and len(fast_items) == len(checked_items)

        def without_clock(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            # the write time of a tombstone's expiry is the clock's, not the fold's
            return [{k: v for k, v in i.items() if k != EXPIRES_ATTRIBUTE} for i in items]

        assert without_clock(fast_items) == without_clock(checked_items)
