"""Queries on the profiles service's read models (the tables its projectors write).

Both are eventually consistent projections of the streams (docs/api.md "consistency").
Item layouts are the projectors' (`profiles.projectors.user_profiles`, `.user_timeline`).
"""

from __future__ import annotations

from typing import Any

from escore.cursors import decode_cursor, encode_cursor
from escore.projection import from_item, read_count
from escore.runtime import aws_client
from escore.writes import DELETED_ATTRIBUTE
from profiles.projectors.user_profiles import profile_key
from profiles.projectors.user_timeline import timeline_pk

MAX_PAGE = 100



class ProfileReadModel:
    def __init__(self, table_name: str, client: Any = None) -> None:
        self.table_name = table_name
        self._client = aws_client("dynamodb", client)

    def post_count(self, user_id: str) -> int:
        """How many live posts the user has (0 when none or unknown)."""
        return read_count(self._client, self.table_name, profile_key(user_id), "post_count")

    def profile(self, user_id: str) -> dict[str, Any] | None:
        """`{"user_id", "handle", "display_name", "post_count"}` once the registration is projected, else None."""
        pk, sk = profile_key(user_id)
        response = self._client.get_item(TableName=self.table_name, Key={"pk": {"S": pk}, "sk": {"S": sk}})
        item = from_item(response.get("Item") or {})
        if "handle" not in item:
            return None
        return {
            "user_id": user_id,
            "handle": item["handle"],
            "display_name": item.get("display_name"),
            "post_count": max(int(item.get("post_count", 0)), 0),
        }


class TimelineReadModel:
    def __init__(self, table_name: str, client: Any = None) -> None:
        self.table_name = table_name
        self._client = aws_client("dynamodb", client)

    def page(self, user_id: str, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the user's live posts, newest first (created_at, then post_id, descending).

        Returns the items `{"post_id", "text", "created_at"}` and the cursor of the next page,
        None when this page is the last. Raises InvalidCursor for a cursor not made here.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1..{MAX_PAGE}")
        query: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": timeline_pk(user_id)}},
            "ProjectionExpression": "sk, post_id, #t, created_at",
            # A deleted post's entry stays as a tombstone (escore.writes.delete) until it expires.
            "FilterExpression": "attribute_not_exists(#deleted)",
            "ExpressionAttributeNames": {"#t": "text", "#deleted": DELETED_ATTRIBUTE},
            "ScanIndexForward": False,
            "Limit": limit + 1,  # one more than asked tells whether another page exists
        }
        if cursor is not None:
            query["ExclusiveStartKey"] = {"pk": {"S": timeline_pk(user_id)}, "sk": {"S": decode_cursor(cursor)}}
        rows: list[dict[str, Any]] = []
        while len(rows) <= limit:
            response = self._client.query(**query)
            rows.extend(from_item(item) for item in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if not last:
                break
            query["ExclusiveStartKey"] = last
            query["Limit"] = limit + 1 - len(rows)
        items = [{"post_id": r["post_id"], "text": r["text"], "created_at": r["created_at"]} for r in rows[:limit]]
        next_cursor = encode_cursor(rows[limit - 1]["sk"]) if len(rows) > limit else None
        return items, next_cursor
