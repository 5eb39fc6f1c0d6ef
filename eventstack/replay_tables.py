"""Replay's DynamoDB housekeeping: the tables it builds, and its own `$replay#` items in them.

The table lifecycle: a projection's tables are its deployed one (`<table>`) and the generations
`replay --into new` builds (`<table>-g<UTC timestamp>`, `new_generation`); replay creates them as
the deployed ones are (on demand, point-in-time recovery, tombstones' TTL), empties one for an
in-place rebuild (its control item kept), lists them and deletes retired ones.

Replay's items live in the target table beside the read model (keys starting with `$` are never
read-model items, and the projection engine refuses to write them):

- `$replay#cuts` / `$cuts`: per source stream and shard, the sequence number replay folds up to
  (`eventstack.replay_streams.read_cuts`), fixed once for every worker of the replay;
- `$replay#<i>/<n>` / `$done`: worker i of n has folded and written its streams;
- `$replay#finish` / `$claim`: the worker that does the tail, the switch and the hand-off.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson

from escore import naming
from escore.control import CONTROL_PK, CONTROL_SK
from escore.writes import EXPIRES_ATTRIBUTE
from eventstack.topology import Projection

REPLAY_PK = "$replay#"
CUTS = (f"{REPLAY_PK}cuts", "$cuts")
CLAIM = (f"{REPLAY_PK}finish", "$claim")
DONE_SK = "$done"
GENERATION_RE = re.compile(r"-g\d{14}$")


class TableError(RuntimeError):
    pass


def done_key(shard: tuple[int, int]) -> tuple[str, str]:
    return (f"{REPLAY_PK}{shard[0]}/{shard[1]}", DONE_SK)


def _key(key: tuple[str, str]) -> dict[str, Any]:
    return {"pk": {"S": key[0]}, "sk": {"S": key[1]}}


def get_state(dynamodb: Any, table: str, key: tuple[str, str]) -> dict[str, Any] | None:
    item = dynamodb.get_item(TableName=table, Key=_key(key), ConsistentRead=True).get("Item")
    if item is None:
        return None
    state: dict[str, Any] = orjson.loads(item["state"]["S"])
    return state


def put_state(dynamodb: Any, table: str, key: tuple[str, str], state: dict[str, Any], *, only_new: bool = False) -> bool:
    """Write a replay item; with `only_new`, only if there is none (False if there was)."""
    kwargs: dict[str, Any] = {"TableName": table,
                              "Item": {**_key(key), "state": {"S": orjson.dumps(state).decode()}}}
    if only_new:
        kwargs["ConditionExpression"] = "attribute_not_exists(pk)"
    try:
        dynamodb.put_item(**kwargs)
    except dynamodb.exceptions.ConditionalCheckFailedException:
        return False
    return True


def delete_items(dynamodb: Any, table: str, keys: Iterable[tuple[str, str]]) -> None:
    for key in keys:
        dynamodb.delete_item(TableName=table, Key=_key(key))


def create_generation(dynamodb: Any, name: str, projection: Projection, stage: str) -> list[str]:
    """Create the table `name` for `projection`, keyed and tagged as its deployed table; notes as `create_table`."""
    spec = projection.table
    tags = {"eventstack:projection": projection.name, "eventstack:stage": stage, "eventstack:built-by": "replay"}
    return create_table(dynamodb, name, spec.partition_key, spec.sort_key, tags,
                        spec.ttl_attribute or EXPIRES_ATTRIBUTE)


def create_table(dynamodb: Any, name: str, partition_key: tuple[str, str], sort_key: tuple[str, str] | None,
                 tags: dict[str, str], ttl_attribute: str | None = None) -> list[str]:
    """Create a projection table (on demand, as the deployed ones); notes about what could not be set."""
    keys = [(partition_key, "HASH")] + ([(sort_key, "RANGE")] if sort_key else [])
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": k[0], "KeyType": kind} for k, kind in keys],
        AttributeDefinitions=[{"AttributeName": k[0], "AttributeType": k[1]} for k, _ in keys],
        BillingMode="PAY_PER_REQUEST",
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )
    dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 150})
    notes = []
    try:  # as the CDK-managed tables: point-in-time recovery on, tombstones expire
        dynamodb.update_continuous_backups(
            TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    except Exception as exc:  # not fatal: the table can be rebuilt from the archive
        notes.append(f"point-in-time recovery not enabled on {name}: {exc}")
    if ttl_attribute:
        try:
            dynamodb.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl_attribute})
        except Exception as exc:
            notes.append(f"TTL not enabled on {name} (tombstones will not expire): {exc}")
    return notes


def empty_table(dynamodb: Any, table: str) -> int:
    """Delete every item but the control item (`$control`); the number deleted."""
    keys: list[dict[str, Any]] = []
    deleted = 0
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ProjectionExpression="pk, sk",
                                                        ConsistentRead=True):
        for item in page.get("Items", []):
            if item["pk"]["S"] == CONTROL_PK and item["sk"]["S"] == CONTROL_SK:
                continue
            keys.append(item)
        while len(keys) >= 25:
            _batch_delete(dynamodb, table, keys[:25])
            deleted += 25
            del keys[:25]
    if keys:
        _batch_delete(dynamodb, table, keys)
        deleted += len(keys)
    return deleted


def _batch_delete(dynamodb: Any, table: str, keys: list[dict[str, Any]]) -> None:
    request = {table: [{"DeleteRequest": {"Key": {"pk": k["pk"], "sk": k["sk"]}}} for k in keys]}
    for attempt in range(10):
        answer = dynamodb.batch_write_item(RequestItems=request)
        request = answer.get("UnprocessedItems") or {}
        if not request:
            return
        time.sleep(min(0.05 * 2**attempt, 2.0))
    raise TableError(f"emptying {table}: BatchWriteItem kept returning unprocessed items")


def table_exists(dynamodb: Any, name: str) -> bool:
    try:
        dynamodb.describe_table(TableName=name)
    except dynamodb.exceptions.ResourceNotFoundException:
        return False
    return True


def delete_table(dynamodb: Any, name: str) -> None:
    with contextlib.suppress(dynamodb.exceptions.ResourceNotFoundException):
        dynamodb.delete_table(TableName=name)


def base_name(table: str) -> str:
    """A projection table's name without its generation suffix."""
    return GENERATION_RE.sub("", table)


def new_generation(active: str, now: datetime) -> str:
    """The name of a new generation of the table `active` (itself a generation or the deployed one)."""
    return naming.table_generation(base_name(active), f"{now:%Y%m%d%H%M%S}")


def generations(dynamodb: Any, base: str) -> list[str]:
    """The tables named `base` or `base` + a generation suffix."""
    names: list[str] = []
    for page in dynamodb.get_paginator("list_tables").paginate():
        names += [n for n in page["TableNames"] if n == base or (n.startswith(base) and GENERATION_RE.search(n))]
    return names
