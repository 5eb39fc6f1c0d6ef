"""A query's rows on stdout: a rich table (default), a JSON array of row objects, or CSV with a header.

`plain` turns an engine's values into JSON-able ones (engines call it, so QueryResult rows are
JSON-able whichever engine made them): timestamps become RFC 3339 text (a naive one is UTC),
Decimals numbers (int when whole), UUIDs and other objects text; lists and dicts keep their shape.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import IO, Any, Literal

import orjson

from eventstack.audit.engine import QueryResult

Format = Literal["table", "json", "csv"]
FORMATS: tuple[Format, ...] = ("table", "json", "csv")


def plain(value: Any) -> Any:
    """`value` as str, int, float, bool, None, or a list/dict of those."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [plain(v) for v in value]
    return str(value)


def write(result: QueryResult, fmt: Format, out: IO[str] | None = None) -> None:
    out = out or sys.stdout
    if fmt == "json":
        out.write(orjson.dumps(result.records(), option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([_cell(v) for v in row] for row in result.rows)
    else:
        _table(result, out)
    out.flush()


def _cell(value: Any) -> str:
    """A value as one CSV or table cell: nested values as JSON text, NULL as empty."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _table(result: QueryResult, out: IO[str]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=True, header_style="bold", show_lines=False)
    for name in result.columns:
        table.add_column(name, overflow="fold")
    for row in result.rows:
        table.add_row(*(Text(_cell(v)) for v in row))  # Text: a value is never read as markup
    Console(file=out, soft_wrap=False).print(table)
