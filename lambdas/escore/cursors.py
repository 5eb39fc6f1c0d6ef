"""Opaque page cursors over a read model's time-ordered sort keys (`<created_at>#<id>`).

One rule for every read model that pages newest first (the timeline, the notifications): the cursor
is the last sort key handed out, as base64url JSON, and a cursor is accepted only if it has exactly
that shape, so a tampered one is a 422, never a query with an arbitrary ExclusiveStartKey.
"""

from __future__ import annotations

import base64
import binascii
import re

import orjson

TIME_ORDERED_SK = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z#[^#]{1,200}")
MAX_CURSOR = 512


class InvalidCursor(ValueError):
    """A `cursor` that this read model did not hand out (malformed, tampered with)."""


def encode_cursor(sort_key: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"sk": sort_key})).rstrip(b"=").decode()


def decode_cursor(cursor: str, pattern: re.Pattern[str] = TIME_ORDERED_SK) -> str:
    """The sort key a cursor of `encode_cursor` holds; InvalidCursor for anything else."""
    try:
        if not cursor or len(cursor) > MAX_CURSOR:
            raise ValueError("bad length")
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise InvalidCursor("cursor is not one this API handed out") from exc
    if not isinstance(raw, dict) or set(raw) != {"sk"} or not isinstance(raw["sk"], str) \
            or not pattern.fullmatch(raw["sk"]):
        raise InvalidCursor("cursor is not one this API handed out")
    sort_key: str = raw["sk"]
    return sort_key
