"""Tables on moto, created as eventstack.topology declares them."""

from __future__ import annotations

from typing import Any

from eventstack.topology import TOPOLOGY, Table


def create_table(client: Any, table: Table, name: str | None = None) -> str:
    """Create `table` (keys, stream, TTL as the topology says); return its name."""
    name = name or table.logical_name
    keys = [table.partition_key, *([table.sort_key] if table.sort_key else [])]
    request: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [
            {"AttributeName": attr, "KeyType": kind} for (attr, _), kind in zip(keys, ("HASH", "RANGE"), strict=False)
        ],
        "AttributeDefinitions": [{"AttributeName": attr, "AttributeType": type_} for attr, type_ in keys],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if table.stream:
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    client.create_table(**request)
    if table.ttl_attribute:
        client.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute}
        )
    return name


def create_event_store(client: Any, service: str) -> str:
    return create_table(client, TOPOLOGY.service(service).event_store)


def create_projection_table(client: Any, projection: str) -> str:
    _, found = TOPOLOGY.projection(projection)
    return create_table(client, found.table)
