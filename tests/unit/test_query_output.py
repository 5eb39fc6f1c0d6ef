"""`eventstack query`'s output: JSON-able values, a JSON array and nothing else, CSV with a header, a table."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from eventstack.audit.athena_engine import convert
from eventstack.audit.engine import QueryResult
from eventstack.audit.output import plain, write

pytestmark = pytest.mark.unit

RESULT = QueryResult(["event_id", "n", "at", "tags", "note"],
                     [("e1", 2, "2026-12-01T10:00:00Z", ["a", "b"], None), ("e2", 3.5, None, {"k": 1}, "x,\"y\"")])


def test_plain_values() -> None:
    assert plain(datetime(2026, 12, 1, 10, 0, 0, 123000)) == "2026-12-01T10:00:00.123000Z"  # naive is UTC
    assert plain(datetime(2026, 12, 1, 11, tzinfo=timezone(timedelta(hours=1)))) == "2026-12-01T10:00:00Z"
    assert plain(Decimal("12.00")) == 12 and isinstance(plain(Decimal("12.00")), int)
    assert plain(Decimal("1.25")) == 1.25
    assert plain(date(2026, 12, 1)) == "2026-12-01"
    assert plain(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert plain({"a": [Decimal("1"), datetime(2026, 1, 1, tzinfo=UTC)]}) == {"a": [1, "2026-01-01T00:00:00Z"]}
    assert plain(None) is None and plain(True) is True


def test_json_is_exactly_an_array_of_row_objects() -> None:
    out = io.StringIO()
    write(RESULT, "json", out)
    assert json.loads(out.getvalue()) == [
        {"event_id": "e1", "n": 2, "at": "2026-12-01T10:00:00Z", "tags": ["a", "b"], "note": None},
        {"event_id": "e2", "n": 3.5, "at": None, "tags": {"k": 1}, "note": "x,\"y\""},
    ]
    assert out.getvalue().count("\n") == 1


def test_empty_result_is_an_empty_array() -> None:
    out = io.StringIO()
    write(QueryResult(["n"], []), "json", out)
    assert out.getvalue() == "[]\n"


def test_csv_has_a_header_and_quotes_what_needs_it() -> None:
    out = io.StringIO()
    write(RESULT, "csv", out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows == [RESULT.columns, ["e1", "2", "2026-12-01T10:00:00Z", '["a","b"]', ""],
                    ["e2", "3.5", "", '{"k":1}', 'x,"y"']]


def test_table_shows_every_column_and_value_without_markup() -> None:
    out = io.StringIO()
    write(QueryResult(["type", "n"], [("[red]PostCreated[/red]", 7)]), "table", out)
    text = out.getvalue()
    assert "type" in text and "[red]PostCreated[/red]" in text and "7" in text


@pytest.mark.parametrize(("text", "kind", "value"), [
    ("42", "bigint", 42), ("1.5", "double", 1.5), ("12.50", "decimal(10,2)", 12.5), ("true", "boolean", True),
    ("2026-12-01 10:00:00.123", "timestamp", "2026-12-01T10:00:00.123000Z"),
    ("2026-12-01 10:00:00.123 UTC", "timestamp with time zone", "2026-12-01T10:00:00.123000Z"),
    ("{\"a\":1}", "json", "{\"a\":1}"), ("post-1", "varchar", "post-1"), (None, "bigint", None),
])
def test_athena_values_by_column_type(text: str | None, kind: str, value: object) -> None:
    assert convert(text, kind) == value
