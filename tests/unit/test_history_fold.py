"""A stream's state as of an instant (eventstack.audit.history.fold), folded by the real posts and profiles code."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from escore.envelope import Envelope
from eventstack.audit.history import HistoryError, fold, in_versions, instant, owner_of
from eventstack.audit.trace import Sourced

pytestmark = pytest.mark.unit

POST = "0b6f2f0e-1111-4000-8000-00000000000a"
USER = "0b6f2f0e-2222-4000-8000-00000000000b"
AUTHOR = "0b6f2f0e-3333-4000-8000-00000000000c"


def at(second: int) -> str:
    return f"2030-01-01T00:00:{second:02d}.000000Z"


def event(stream_id: str, version: int, type_: str, schema: int, second: int, data: dict[str, object],
          service: str = "posts") -> Envelope:
    return Envelope(f"{stream_id}-e{version}", stream_id, version, type_, schema, service, at(second), data,
                    {"correlation_id": f"c-{version}"})


def post_events() -> list[Envelope]:
    stream = f"post-{POST}"
    return [
        # PostCreated at schema 1 (no tags): the fold reads it upcast, as the API does
        event(stream, 1, "PostCreated", 1, 10, {"post_id": POST, "author_id": AUTHOR, "text": "first #draft"}),
        event(stream, 2, "PostEdited", 3, 20, {"text": "second", "tags": [], "author_id": AUTHOR,
                                               "created_at": at(10), "previous_tags": ["draft"]}),
        event(stream, 3, "PostEdited", 2, 30, {"text": "third", "tags": []}),
        event(stream, 4, "PostDeleted", 2, 40, {"author_id": AUTHOR, "created_at": at(10), "tags": []}),
    ]


def sourced(envelopes: list[Envelope], source: str = "store") -> list[Sourced]:
    return [Sourced(e, None if source == "store" else at(50), source) for e in envelopes]  # type: ignore[arg-type]


def moment(second: float) -> datetime:
    return datetime(2030, 1, 1, 0, 0, int(second), int((second % 1) * 1_000_000), tzinfo=UTC)


@pytest.mark.parametrize(("second", "text", "deleted", "version"), [
    (10, "first #draft", False, 1),  # an event at exactly T is folded
    (15, "first #draft", False, 1),
    (20, "second", False, 2),
    (29.999999, "second", False, 2),
    (30, "third", False, 3),
    (45, "third", True, 4),
])
def test_a_post_at_each_instant(second: float, text: str, deleted: bool, version: int) -> None:
    stream = f"post-{POST}"
    history = fold(stream, owner_of(stream), sourced(post_events()), moment(second))
    assert history.state is not None
    assert (history.state["text"], history.state["deleted"], history.state["version"]) == (text, deleted, version)
    assert history.state["author_id"] == AUTHOR
    assert history.state["id"] == POST
    assert history.state["created_at"] == at(10)
    assert history.state["updated_at"] == at(10 * version)
    assert [e.version for e in history.events] == list(range(1, version + 1))
    assert history.later == 4 - version
    assert history.to_json()["at"] == moment(second).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_before_the_first_event_the_post_did_not_exist_and_no_at_means_everything() -> None:
    stream = f"post-{POST}"
    before = fold(stream, owner_of(stream), sourced(post_events()), moment(9))
    assert (before.state, before.events, before.later) == (None, [], 4)
    assert before.to_json() == {"stream_id": stream, "at": "2030-01-01T00:00:09.000000Z", "events": [], "state": None}
    everything = fold(stream, owner_of(stream), sourced(post_events()), None)
    assert everything.at is None and everything.later == 0
    assert everything.state == {"id": POST, "version": 4, "created_at": at(10), "updated_at": at(40),
                                "author_id": AUTHOR, "text": "third", "deleted": True}
    listed = everything.to_json()["events"]
    assert [(e["version"], e["type"], e["schema_version"]) for e in listed] == [
        (1, "PostCreated", 1), (2, "PostEdited", 3), (3, "PostEdited", 2), (4, "PostDeleted", 2)]
    assert listed[0]["data"] == {"post_id": POST, "author_id": AUTHOR, "text": "first #draft"}  # as stored


def test_a_user_with_the_profiles_aggregate() -> None:
    stream = f"user-{USER}"
    events = [
        event(stream, 1, "UserRegistered", 1, 1, {"user_id": USER, "handle": "ada", "display_name": "Ada"}, "profiles"),
        event(stream, 2, "DisplayNameChanged", 1, 2, {"display_name": "Ada L."}, "profiles"),
        event(stream, 3, "HandleReserved", 1, 3, {"whatever": True}, "profiles"),  # unknown type: skipped, counted
    ]
    owner = owner_of(stream)
    assert (owner.service, owner.aggregate.__name__, owner.aggregate_id) == ("profiles", "User", USER)
    first = fold(stream, owner, sourced(events), moment(1))
    assert first.state == {"id": USER, "version": 1, "created_at": at(1), "updated_at": at(1),
                           "handle": "ada", "display_name": "Ada"}
    last = fold(stream, owner, sourced(events), None)
    assert last.state is not None
    assert (last.state["display_name"], last.state["version"]) == ("Ada L.", 3)


def test_archive_and_store_copies_of_a_version_are_one_event_and_a_gap_is_an_error() -> None:
    stream = f"post-{POST}"
    events = post_events()
    both = sourced(events[:2], "archive") + sourced(events[1:], "store")
    assert [e.envelope.version for e in in_versions(stream, both)] == [1, 2, 3, 4]
    assert [e.source for e in in_versions(stream, both)] == ["archive", "store", "store", "store"]
    with pytest.raises(HistoryError, match=rf"stream {stream}: version 2 is in neither the archive nor the store"):
        in_versions(stream, sourced([events[0], events[2]]))


def test_unknown_streams_and_bad_instants_are_one_clear_error() -> None:
    with pytest.raises(HistoryError, match=r"unknown stream 'order-1': .*post-<id> \(posts\), user-<id> \(profiles\)"):
        owner_of("order-1")
    with pytest.raises(HistoryError, match="unknown stream 'post-'"):
        owner_of("post-")
    with pytest.raises(HistoryError, match=r"^--at: 'yesterday' is not a time"):
        instant("yesterday")
    assert instant("2030-01-01") == datetime(2030, 1, 1, tzinfo=UTC)
    assert instant("2030-01-01T02:00:00+02:00") == datetime(2030, 1, 1, tzinfo=UTC)
    assert instant(None) is None
