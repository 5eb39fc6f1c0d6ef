"""Billable units, as AWS meters them: pure functions for the cost benchmark (bench/cost.py).

DynamoDB item size (what its capacity units are computed from):
- an item is the sum of its attributes; an attribute is its name's UTF-8 length plus its value;
- S: UTF-8 length; B: bytes; BOOL and NULL: 1 byte;
- N: about one byte per two significant digits, plus one byte (leading and trailing zeros trimmed);
- SS / NS / BS: the sum of their elements;
- M and L: 3 bytes of overhead, plus per element 1 byte and the element (for M, its name too).
Write units: 1 per started 1 KB of the item (minimum 1); a transaction's item costs twice that.
Read units: 1 per started 4 KB strongly consistent, half that eventually consistent (minimum 1 or
0.5); a Query or Scan page is billed on the summed size of the items it read, rounded up per page.

Kinesis Data Streams: on demand, each record is billed rounded up to 1 KB; provisioned, a record is
one PUT payload unit per started 25 KB. Firehose: each record rounded up to 5 KB. Lambda: duration
rounded up to 1 ms per invocation, times the configured memory, in GB-seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

KB = 1024
WRITE_UNIT_BYTES = KB
READ_UNIT_BYTES = 4 * KB
KINESIS_ON_DEMAND_BYTES = KB
KINESIS_PUT_PAYLOAD_BYTES = 25 * KB
FIREHOSE_INCREMENT_BYTES = 5 * KB
TRANSACTION_FACTOR = 2


# --- DynamoDB item size --------------------------------------------------------------------


def number_size(text: str | int | float | Decimal) -> int:
    """Bytes DynamoDB counts for a number: ceil(significant digits / 2) + 1."""
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        return len(str(text)) + 1
    digits = value.as_tuple().digits
    significant = "".join(str(d) for d in digits).strip("0")
    count = max(len(significant), 1)
    return math.ceil(count / 2) + 1


def _text_size(value: str) -> int:
    return len(value.encode("utf-8"))


def _binary_size(value: Any) -> int:
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    return len(str(value).encode("utf-8"))  # a base64 text as given to a low-level client


def value_size(value: Mapping[str, Any]) -> int:
    """Size of one typed attribute value, e.g. {"S": "x"}, {"N": "12"}, {"M": {...}}."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return _text_size(inner)
    if kind == "N":
        return number_size(inner)
    if kind == "B":
        return _binary_size(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(_text_size(v) for v in inner)
    if kind == "NS":
        return sum(number_size(v) for v in inner)
    if kind == "BS":
        return sum(_binary_size(v) for v in inner)
    if kind == "M":
        return 3 + sum(_text_size(name) + value_size(v) + 1 for name, v in inner.items())
    if kind == "L":
        return 3 + sum(value_size(v) + 1 for v in inner)
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def item_size(item: Mapping[str, Mapping[str, Any]] | None) -> int:
    """Size of an item in DynamoDB's low-level form ({name: {type: value}}); 0 for no item."""
    if not item:
        return 0
    return sum(_text_size(name) + value_size(value) for name, value in item.items())


def typed(value: Any) -> dict[str, Any]:
    """A plain Python value as a DynamoDB attribute value (for items folded in memory)."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if value is None:
        return {"NULL": True}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int | float | Decimal):
        return {"N": str(value)}
    if isinstance(value, bytes | bytearray):
        return {"B": bytes(value)}
    if isinstance(value, Mapping):
        return {"M": {str(k): typed(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [typed(v) for v in value]}
    if isinstance(value, set | frozenset):
        return {"L": [typed(v) for v in sorted(value, key=str)]}
    return {"S": str(value)}


def plain_item_size(item: Mapping[str, Any] | None) -> int:
    """Size of an item given as plain Python values ({name: value})."""
    if not item:
        return 0
    return item_size({name: typed(value) for name, value in item.items()})


# --- DynamoDB capacity units ----------------------------------------------------------------


def write_units(size: int) -> int:
    """Write units of one standard write of an item of `size` bytes (minimum 1)."""
    return max(1, math.ceil(size / WRITE_UNIT_BYTES))


def transact_write_units(sizes: Iterable[int]) -> int:
    """A TransactWriteItems: every item (Put, Update, Delete, ConditionCheck) at twice its units."""
    return sum(TRANSACTION_FACTOR * write_units(size) for size in sizes)


def batch_write_units(sizes: Iterable[int]) -> int:
    """A BatchWriteItem: each put or delete is billed as its own write."""
    return sum(write_units(size) for size in sizes)


def read_units(size: int, consistent: bool) -> float:
    """Read units of one item read (GetItem, each key of BatchGetItem); a missing item costs the minimum."""
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    return float(units) if consistent else units / 2


def transact_read_units(sizes: Iterable[int]) -> float:
    return sum(TRANSACTION_FACTOR * read_units(size, True) for size in sizes)


def page_read_units(sizes: Iterable[int], consistent: bool) -> float:
    """One Query or Scan page: the summed size of the items read, rounded up to 4 KB once per page."""
    return read_units(sum(sizes), consistent)


# --- the other services ---------------------------------------------------------------------


def kinesis_record_size(data: bytes | str, partition_key: str) -> int:
    """A Kinesis record as metered: its data blob plus its partition key."""
    blob = data.encode("utf-8") if isinstance(data, str) else data
    return len(blob) + len(partition_key.encode("utf-8"))


def kinesis_on_demand_kb(size: int) -> int:
    """On-demand ingest: the record rounded up to 1 KB, in KB."""
    return max(1, math.ceil(size / KINESIS_ON_DEMAND_BYTES))


def kinesis_put_payload_units(size: int) -> int:
    """Provisioned mode: one PUT payload unit per started 25 KB of a record."""
    return max(1, math.ceil(size / KINESIS_PUT_PAYLOAD_BYTES))


def firehose_billed_bytes(size: int) -> int:
    """Firehose ingestion: each record rounded up to the next 5 KB."""
    return max(1, math.ceil(size / FIREHOSE_INCREMENT_BYTES)) * FIREHOSE_INCREMENT_BYTES


def lambda_billed_ms(seconds: float) -> int:
    """Lambda duration is billed in 1 ms increments, rounded up."""
    return max(1, math.ceil(seconds * 1000 - 1e-9))


def gb_seconds(billed_ms: float, memory_mb: int) -> float:
    return billed_ms / 1000 * memory_mb / 1024


# --- the baseline and the floor -------------------------------------------------------------


def naive_write_units(event_item_sizes: Iterable[tuple[int, int]]) -> int:
    """The naive pipeline: per appended event, one PutItem of the event item (at its size) and one
    1-unit UpdateItem per consuming projection. Takes (item size, consuming projections) pairs."""
    return sum(write_units(size) + consumers for size, consumers in event_item_sizes)


def floor_write_units(event_item_sizes: Iterable[int], changed_item_sizes: Iterable[int]) -> int:
    """The floor: one write per appended event at its size, plus one write per read-model item a
    batch changes, at the size of the item it leaves (or of the item it deletes)."""
    return sum(write_units(s) for s in event_item_sizes) + sum(write_units(s) for s in changed_item_sizes)
