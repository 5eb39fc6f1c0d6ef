"""The trace's order (eventstack.audit.trace.causal_order) and its merge of the archive and the stores."""

from __future__ import annotations

from datetime import datetime

import duckdb
import pytest

from escore.envelope import Envelope
from eventstack import sql
from eventstack.audit.engine import QueryResult
from eventstack.audit.trace import (
    ArchiveUnavailable,
    TraceEntry,
    archived_events,
    causal_order,
    entry_of,
    envelope_of_row,
    merge,
)

pytestmark = pytest.mark.unit


def entry(event_id: str, occurred_at: str, stream_id: str = "post-a", version: int = 1,
          causation_id: str | None = "request-1") -> TraceEntry:
    return TraceEntry(event_id, causation_id, "posts", stream_id, version, "PostCreated", occurred_at,
                      None, "store", -1, {})


def envelope(event_id: str, stream_id: str = "post-a", version: int = 1,
             occurred_at: str = "2030-01-01T00:00:00.000001Z", correlation_id: str = "c-1",
             causation_id: str | None = "request-1") -> Envelope:
    metadata = {"correlation_id": correlation_id}
    if causation_id:
        metadata["causation_id"] = causation_id
    return Envelope(event_id, stream_id, version, "PostCreated", 2, "posts", occurred_at,
                    {"post_id": "a", "author_id": "u", "text": "hi", "tags": []}, metadata)


def ids(entries: list[TraceEntry]) -> list[str]:
    return [e.event_id for e in entries]


def test_events_caused_by_requests_are_in_time_then_stream_then_version_order() -> None:
    entries = [
        entry("e4", "2030-01-01T00:00:02.000000Z", "user-b", 1),
        entry("e2", "2030-01-01T00:00:01.000000Z", "post-b", 2),
        entry("e1", "2030-01-01T00:00:01.000000Z", "post-b", 1),
        entry("e0", "2030-01-01T00:00:01.000000Z", "post-a", 7),
        entry("e3", "2030-01-01T00:00:01.500000Z", "post-a", 8, causation_id=None),
    ]
    ordered = causal_order(entries)
    assert ids(ordered) == ["e0", "e1", "e2", "e3", "e4"]
    assert [e.depth for e in ordered] == [0, 0, 0, 0, 0]


def test_a_child_follows_its_parent_even_when_its_clock_says_earlier() -> None:
    # a consumer's command caused by event p: its event c carries causation_id = p's event_id
    entries = [
        entry("c", "2030-01-01T00:00:00.500000Z", "user-u", 3, causation_id="p"),
        entry("p", "2030-01-01T00:00:01.000000Z", "post-a", 1),
        entry("q", "2030-01-01T00:00:00.900000Z", "post-z", 1),
    ]
    ordered = causal_order(entries)
    assert ids(ordered) == ["q", "p", "c"]
    assert [e.depth for e in ordered] == [0, 0, 1]


def test_depth_first_parents_before_children_siblings_by_time() -> None:
    entries = [
        entry("root", "2030-01-01T00:00:01.000000Z"),
        entry("late-child", "2030-01-01T00:00:03.000000Z", "user-1", 1, causation_id="root"),
        entry("early-child", "2030-01-01T00:00:02.000000Z", "user-2", 1, causation_id="root"),
        entry("grandchild", "2030-01-01T00:00:04.000000Z", "user-3", 1, causation_id="early-child"),
        entry("other-root", "2030-01-01T00:00:01.500000Z", "post-b", 1),
    ]
    ordered = causal_order(entries)
    assert ids(ordered) == ["root", "early-child", "grandchild", "late-child", "other-root"]
    assert [e.depth for e in ordered] == [0, 1, 2, 1, 0]


def test_a_causation_cycle_is_broken_at_its_earliest_event_and_nothing_is_lost() -> None:
    entries = [
        entry("x", "2030-01-01T00:00:02.000000Z", causation_id="y"),
        entry("y", "2030-01-01T00:00:01.000000Z", "post-b", causation_id="x"),
        entry("self", "2030-01-01T00:00:00.000000Z", "post-c", causation_id="self"),
    ]
    ordered = causal_order(entries)
    assert ids(ordered) == ["self", "y", "x"]
    assert [e.depth for e in ordered] == [0, 0, 1]


def test_a_long_causal_chain_does_not_recurse() -> None:
    chain = [entry("e0", "2030-01-01T00:00:00.000000Z")]
    chain += [entry(f"e{n}", "2030-01-01T00:00:00.000000Z", f"s-{n}", 1, causation_id=f"e{n - 1}")
              for n in range(1, 5000)]
    ordered = causal_order(reversed(chain))
    assert ids(ordered) == [f"e{n}" for n in range(5000)]
    assert ordered[-1].depth == 4999


def test_merge_keeps_one_event_per_id_the_store_copy_and_the_archive_time() -> None:
    archived = [
        (envelope("both"), "2030-01-01T00:05:00.000000Z"),
        (envelope("both"), "2030-01-01T00:09:00.000000Z"),  # a duplicate delivery
        (envelope("archive-only", version=2), "2030-01-01T00:05:00.000000Z"),
    ]
    stored = [envelope("both"), envelope("store-only", version=3)]
    merged = {e.envelope.event_id: e for e in merge(archived, stored)}
    assert sorted(merged) == ["archive-only", "both", "store-only"]
    assert (merged["both"].source, merged["both"].archived_at) == ("both", "2030-01-01T00:05:00.000000Z")
    assert (merged["archive-only"].source, merged["archive-only"].archived_at) == ("archive", "2030-01-01T00:05:00.000000Z")
    assert (merged["store-only"].source, merged["store-only"].archived_at) == ("store", None)
    shown = entry_of(merged["store-only"])
    assert (shown.causation_id, shown.version, shown.data["text"]) == ("request-1", 3, "hi")


def test_an_archive_row_decodes_json_text_and_either_timestamp_type() -> None:
    row = {"event_id": "e", "stream_id": "post-a", "version": 2, "type": "PostEdited", "schema_version": 3,
           "service": "posts", "occurred_at": "2030-01-01T00:00:00.000001Z",
           "data": '{"text": "x"}', "metadata": '{"correlation_id": "c"}'}
    decoded = envelope_of_row(row)
    assert decoded is not None
    assert (decoded.data, decoded.metadata, decoded.version) == ({"text": "x"}, {"correlation_id": "c"}, 2)
    assert envelope_of_row({**row, "version": "2", "schema_version": "3"}) == decoded  # Athena's text columns
    assert envelope_of_row({**row, "data": "{not json"}) is None
    assert envelope_of_row({**row, "version": 0}) is None


class DuckEngine:
    """A DuckDB table `events` with the archive's columns: enough to run trace.sql as written."""

    name = "duckdb"

    def __init__(self, rows: list[tuple[object, ...]]) -> None:
        self.con = duckdb.connect()
        self.con.execute(
            "CREATE TABLE events (event_id TEXT, stream_id TEXT, version BIGINT, type TEXT, schema_version BIGINT,"
            " service TEXT, occurred_at TEXT, data TEXT, metadata TEXT, archived_at TIMESTAMP)")
        self.con.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def query(self, sql, params=None, *, dialect=None, progress=None):  # type: ignore[no-untyped-def]
        cursor = self.con.execute(sql, params or {})
        return QueryResult([d[0] for d in cursor.description], cursor.fetchall())

    def close(self) -> None:
        self.con.close()


def test_trace_sql_selects_the_correlation_id_exactly_with_its_archive_time() -> None:
    when = datetime(2030, 1, 1, 0, 5)  # naive: UTC
    rows = [
        ("e1", "post-a", 1, "PostCreated", 2, "posts", "2030-01-01T00:00:00.000001Z", '{"text": "a"}',
         '{"correlation_id": "c-1", "causation_id": "r"}', when),
        ("e2", "post-b", 1, "PostCreated", 2, "posts", "2030-01-01T00:00:00.000002Z", '{"text": "b"}',
         '{"correlation_id": "c-10"}', when),
    ]
    engine = DuckEngine(rows)
    found = archived_events(engine, "trace", {"correlation_id": "c-1"})
    assert [(e.event_id, at) for e, at in found] == [("e1", "2030-01-01T00:05:00.000000Z")]
    assert archived_events(engine, "trace", {"correlation_id": "nobody"}) == []
    engine.close()
    with pytest.raises(ArchiveUnavailable, match=r"^the archive cannot be queried \(duckdb\): "):
        archived_events(engine, "trace", {"correlation_id": "c-1"})


def test_the_queries_read_as_athena_sql_with_their_parameters_quoted() -> None:
    import sqlglot

    trace_sql = sql.transpile(sql.render(sql.source("trace"), {"correlation_id": "it's"}), write="athena")
    assert "JSON_EXTRACT_SCALAR(metadata, '$.correlation_id') = 'it''s'" in trace_sql
    history_sql = sql.transpile(sql.render(sql.source("history"), {"stream_id": "post-1"}), write="athena")
    assert "stream_id = 'post-1'" in history_sql
    for text in (trace_sql, history_sql):
        assert sqlglot.parse_one(text, read="athena").find(sqlglot.exp.Table).name == "events"
