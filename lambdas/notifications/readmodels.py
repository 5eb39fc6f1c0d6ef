"""Queries on `user_notifications` (eventually consistent, docs/api.md "consistency").

A user's notifications are the posts that mention their handle, newest first (by the post's
creation time, then its id), the user's own posts left out. Item layout: notifications.items.
"""

from __future__ import annotations

from typing import Any

from escore.cursors import decode_cursor, encode_cursor
from escore.item_writes import item_key
from escore.readmodel import from_item
from escore.runtime import aws_client
from notifications.items import mentions_pk, user_key

MAX_PAGE = 100



class NotificationReadModel:
    def __init__(self, table_name: str, client: Any = None) -> None:
        self.table_name = table_name
        self._client = aws_client("dynamodb", client)

    def handle_of(self, user_id: str) -> str | None:
        """The user's handle once their registration is projected here, else None."""
        response = self._client.get_item(TableName=self.table_name, Key=item_key(user_key(user_id)))
        handle = from_item(response.get("Item") or {}).get("handle")
        return str(handle) if handle else None

    def page(self, user_id: str, handle: str, limit: int, cursor: str | None
             ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the posts mentioning `handle` (not by `user_id`), newest first, and the next
        page's cursor (None on the last). Raises InvalidCursor for a cursor not made here."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1..{MAX_PAGE}")
        pk = mentions_pk(handle)
        query: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk",
            "FilterExpression": "author_id <> :me",
            "ExpressionAttributeValues": {":pk": {"S": pk}, ":me": {"S": user_id}},
            "ProjectionExpression": "sk, post_id, author_id, #t, created_at",
            "ExpressionAttributeNames": {"#t": "text"},
            "ScanIndexForward": False,
            "Limit": limit + 1,  # one more than asked tells whether another page exists
        }
        if cursor is not None:
            query["ExclusiveStartKey"] = {"pk": {"S": pk}, "sk": {"S": decode_cursor(cursor)}}
        rows: list[dict[str, Any]] = []
        while len(rows) <= limit:
            response = self._client.query(**query)
            rows.extend(from_item(item) for item in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if not last:
                break
            query["ExclusiveStartKey"] = last
            query["Limit"] = limit + 1 - len(rows)
        items = [{"post_id": r["post_id"], "author_id": r["author_id"], "text": r["text"],
                  "created_at": r["created_at"]} for r in rows[:limit]]
        next_cursor = encode_cursor(rows[limit - 1]["sk"]) if len(rows) > limit else None
        return items, next_cursor
