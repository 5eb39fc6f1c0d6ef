"""The one conditional DynamoDB request that writes a read-model item (the engine's and replay's).

A `Write` (escore.writes), usually a coalesced run of them, becomes a PutItem (a `put`; a `delete`,
which leaves a tombstone) or an UpdateItem (SET and REMOVE of an `update`; SET and ADD of a
`count`), with its condition:

- `owned_request`: an owned item, stamped with its stream's version (`_v`) and conditioned on the
  item holding an older one (`_v < below`), and on the item existing unless the run may create it.
  The live engine (escore.engine) gives the run's first version as `below`; a rebuild
  (escore.rebuild), which writes each item's final state once, gives the last.
- `shared_request`: a shared item as the live engine writes it, with one source namespace's
  watermark and recent events (conditioned on both).
- `count_update`: the UpdateItem of a shared item under a caller's condition and its own SETs
  first (the rebuild's watermarks), then the write's SETs and ADDs.

Names and values are aliased `#a<n>` and `:a<n>`, in the order they are used. Nothing here sends
a request; the callers do, and ask for `ReturnValuesOnConditionCheckFailure` if they read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from escore.attributes import to_attr
from escore.writes import (
    DELETED_ATTRIBUTE,
    EXPIRES_ATTRIBUTE,
    RECENT_PREFIX,
    VERSION_ATTRIBUTE,
    WATERMARK_PREFIX,
    Key,
    Write,
)

TOMBSTONE_TTL_SECONDS = 8 * 24 * 3600  # longer than any re-delivery: Kinesis keeps records 1-7 days


@dataclass
class Expression:
    """The attribute names and values one request's expressions refer to, by alias."""

    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    def name(self, attribute: str) -> str:
        alias = f"#a{len(self.names)}"
        self.names[alias] = attribute
        return alias

    def value(self, attr: dict[str, Any]) -> str:
        alias = f":a{len(self.values)}"
        self.values[alias] = attr
        return alias


def item_key(key: Key) -> dict[str, Any]:
    return {"pk": {"S": key[0]}, "sk": {"S": key[1]}}


def owned_request(table: str, key: Key, write: Write, *, version: int, below: int, may_create: bool,
                  now: float) -> tuple[str, dict[str, Any]]:
    """("put_item" | "update_item", its arguments): `write` to an owned item, leaving `_v = version`."""
    x = Expression()
    mark = x.name(VERSION_ATTRIBUTE)
    limit = x.value({"N": str(below)})
    condition = (f"attribute_not_exists({mark}) OR {mark} < {limit}" if may_create
                 else f"attribute_exists({mark}) AND {mark} < {limit}")
    stamp = {"N": str(version)}
    request: dict[str, Any]
    if write.op in ("put", "delete"):
        attributes = dict(write.set) if write.op == "put" else {
            DELETED_ATTRIBUTE: True, EXPIRES_ATTRIBUTE: int(now) + TOMBSTONE_TTL_SECONDS}
        request = {"Item": {**item_key(key), VERSION_ATTRIBUTE: stamp, **{n: to_attr(v) for n, v in attributes.items()}}}
        method = "put_item"
    else:
        sets = [f"{mark} = {x.value(stamp)}"] + [f"{x.name(n)} = {x.value(to_attr(v))}" for n, v in write.set.items()]
        expression = f"SET {', '.join(sets)}"
        if write.remove:
            expression += f" REMOVE {', '.join(x.name(n) for n in sorted(write.remove))}"
        request = {"Key": item_key(key), "UpdateExpression": expression}
        method = "update_item"
    request.update(TableName=table, ConditionExpression=condition, ExpressionAttributeNames=x.names,
                   ExpressionAttributeValues=x.values)
    return method, request


def shared_request(table: str, key: Key, write: Write, namespace: str, *, first: str, last: str,
                   recent: Sequence[str], written: Sequence[str]) -> dict[str, Any]:
    """The UpdateItem of a shared item carrying the deliveries `first`..`last` (positions) of `namespace`.

    Conditioned on the namespace's watermark being below `first` and on its recent events being
    `recent` (none: the attribute absent); sets the watermark to `last` and the recent events to
    `written`.
    """
    x = Expression()
    mark, tags = x.name(WATERMARK_PREFIX + namespace), x.name(RECENT_PREFIX + namespace)
    condition = f"(attribute_not_exists({mark}) OR {mark} < {x.value({'S': first})})"
    # The recent events are replaced, not appended to: the write holds only if they are what
    # the writer last wrote (or read back); else the old item comes back and it knows them.
    condition += (f" AND {tags} = {x.value({'S': ' '.join(recent)})}" if recent
                  else f" AND attribute_not_exists({tags})")
    sets = [f"{mark} = {x.value({'S': last})}", f"{tags} = {x.value({'S': ' '.join(written)})}"]
    return count_update(table, key, write, x, condition=condition, sets=sets)


def count_update(table: str, key: Key, write: Write, x: Expression, *, condition: str,
                 sets: Sequence[str]) -> dict[str, Any]:
    """The UpdateItem of a shared item: `sets` (aliased in `x`), then the write's SETs and ADDs."""
    clauses = [*sets, *(f"{x.name(n)} = {x.value(to_attr(v))}" for n, v in write.set.items())]
    adds = [f"{x.name(n)} {x.value(to_attr(v))}" for n, v in write.add.items()]
    expression = f"SET {', '.join(clauses)}" + (f" ADD {', '.join(adds)}" if adds else "")
    return {"TableName": table, "Key": item_key(key), "UpdateExpression": expression,
            "ConditionExpression": condition, "ExpressionAttributeNames": x.names,
            "ExpressionAttributeValues": x.values}
