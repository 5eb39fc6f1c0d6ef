"""Builders shared by the contract suite and the DynamoDB adapter's own tests."""

from __future__ import annotations

from typing import Any

from escore.envelope import Envelope, new_id, utc_now
from eventstack.topology import TOPOLOGY

EVENT_STORE_TABLE = TOPOLOGY.service("posts").event_store


def event(
    stream_id: str, version: int, type_: str = "PostEdited", schema_version: int = 1, **data: Any
) -> Envelope:
    return Envelope(
        event_id=new_id(),
        stream_id=stream_id,
        version=version,
        type=type_,
        schema_version=schema_version,
        service="posts",
        occurred_at=utc_now(),
        data=data or {"text": f"v{version}"},
        metadata={"correlation_id": new_id()},
    )


def events(stream_id: str, after: int, count: int, **data: Any) -> list[Envelope]:
    """`count` events appended after version `after`."""
    return [event(stream_id, after + n, **data) for n in range(1, count + 1)]


def stream() -> str:
    return f"post-{new_id()}"
