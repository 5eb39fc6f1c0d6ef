"""Attempt marks: one item per publisher batch, written to the event store before its first PutRecords.

`stream_id = "$publish#<eventID of the batch's first publishable record>"`, `version = 0`,
`kind = "publish"`, `at` (epoch seconds of the first attempt) and `expires_at` (TTL, two days: longer
than the DynamoDB stream keeps the records, so no attempt of the batch can come after its mark is
gone). The store reserves `$` stream ids for its own items and the publisher skips them, so the
mark's own stream record publishes nothing and writes no mark.

Written with `attribute_not_exists(stream_id)`: success means this is the batch's first attempt and
nothing of it can be on Kinesis yet; a failed condition means an earlier attempt began at `at`
(returned with ALL_OLD), so whatever it wrote is on the stream after `at` and is found by reading back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

MARK_PREFIX = "$publish#"
MARK_KIND = "publish"
MARK_TTL_SECONDS = 2 * 24 * 3600


def mark_id(event_id: str) -> str:
    return f"{MARK_PREFIX}{event_id}"


class AttemptMarks:
    def __init__(self, dynamodb: Any, table: str, *, clock: Callable[[], float] = time.time) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._clock = clock

    def begin(self, event_id: str, *, fallback_at: float) -> float | None:
        """Record an attempt of the batch whose first publishable record has `event_id`.

        None: the first attempt. Otherwise the epoch seconds at which the first attempt began
        (`fallback_at` if the earlier mark cannot be read: a moment known to precede every attempt).
        """
        now = int(self._clock())
        try:
            self._dynamodb.put_item(
                TableName=self._table,
                Item={
                    "stream_id": {"S": mark_id(event_id)},
                    "version": {"N": "0"},
                    "kind": {"S": MARK_KIND},
                    "at": {"N": str(now)},
                    "expires_at": {"N": str(now + MARK_TTL_SECONDS)},
                },
                ConditionExpression="attribute_not_exists(stream_id)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Exception as exc:
            response = getattr(exc, "response", None)
            if not isinstance(response, dict) or response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            at = (response.get("Item") or {}).get("at", {}).get("N")
            try:
                return float(at) if at is not None else fallback_at
            except ValueError:
                return fallback_at
        return None
