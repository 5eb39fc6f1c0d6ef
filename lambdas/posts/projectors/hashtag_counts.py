"""`hashtag_counts`: per tag, how many live posts carry it.

Fed by the posts stream, at schema 2 (`posts.schemas`: every PostCreated and PostEdited carries
`tags`; older events are upcast on the way in). One item per tag ever seen:
`pk = "tag#<tag>"`, `sk = "count"`, attributes `tag` and `post_count`, the latter written only with
ADD (+1 per tag of a created post; an edit -1 for each tag it drops and +1 for each it adds; a
live post's PostDeleted -1 per tag it had). ADDs from different post streams commute, and `tag`
is SET to the same value by every stream, so the table ends the same whatever the order of the
streams. A tag whose posts are all gone keeps its item at 0.

A post's stream state (kept with its checkpoint) holds its current tags and whether it is live,
because PostDeleted carries neither and an edit must know the tags it replaces. `hashtags` keeps
at most 30 tags per post, so one event's writes (an edit: at most 60 keys) and its checkpoint
always fit one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import posts.schemas  # noqa: F401  registers the upcasting steps of the events this projection reads
from escore.envelope import Envelope
from escore.projection import ProjectionSpec, StreamState, Write, build_projector, update
from escore.runtime import Handler, lazy

NAME = "hashtag_counts"
TABLE_ENV = "HASHTAG_COUNTS_TABLE"  # eventstack.topology.table_env(NAME); read by TableResolver
COUNT_SK = "count"


def tag_key(tag: str) -> tuple[str, str]:
    return (f"tag#{tag}", COUNT_SK)


def _count(tag: str, delta: int) -> Write:
    return update(tag_key(tag), set={"tag": tag}, add={"post_count": delta})


def _post_created(state: StreamState, event: Envelope) -> tuple[StreamState, list[Write]]:
    tags: list[str] = event.data["tags"]
    return {"live": True, "tags": tags}, [_count(tag, 1) for tag in tags]


def _post_edited(state: StreamState, event: Envelope) -> tuple[StreamState, list[Write]]:
    if not state.get("live"):
        return state, []
    old, new = set(state.get("tags", ())), set(event.data["tags"])
    writes = [_count(tag, -1) for tag in sorted(old - new)] + [_count(tag, 1) for tag in sorted(new - old)]
    return {**state, "tags": sorted(new)}, writes


def _post_deleted(state: StreamState, event: Envelope) -> tuple[StreamState, list[Write]]:
    if not state.get("live"):
        return state, []
    return {"live": False}, [_count(tag, -1) for tag in state.get("tags", ())]


PROJECTION = ProjectionSpec(
    NAME,
    {
        "PostCreated": _post_created,
        "PostEdited": _post_edited,
        "PostDeleted": _post_deleted,
    },
)


def build(env: Mapping[str, str], *, client: Any = None) -> Handler:
    return build_projector(PROJECTION, env, client)


handler = lazy(build)
