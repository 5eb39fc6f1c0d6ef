"""Reading a projection table's items as its readers see them: plain values, no engine attributes.

The engine keeps attributes of its own on read-model items, all starting with `_` (escore.writes):
readers drop them (`from_item`), skip tombstones (`is_tombstone`), and read a `count` counter as 0
when it is absent (`read_count`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from escore.attributes import from_attr
from escore.writes import DELETED_ATTRIBUTE


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item's attributes as plain values, without the engine's own (`_...`) attributes."""
    return {name: from_attr(attr) for name, attr in item.items() if not name.startswith("_")}


def is_tombstone(item: Mapping[str, Any]) -> bool:
    """A raw DynamoDB item that `delete` left behind."""
    return DELETED_ATTRIBUTE in item


def read_count(client: Any, table: str, key: tuple[str, str], attribute: str) -> int:
    """A counter a projection keeps with `count` (e.g. `post_count`): 0 when the item or attribute is absent."""
    response = client.get_item(
        TableName=table,
        Key={"pk": {"S": key[0]}, "sk": {"S": key[1]}},
        ProjectionExpression=attribute,
    )
    item = response.get("Item")
    if not item or attribute not in item:
        return 0
    return max(int(item[attribute]["N"]), 0)
