"""`hashtag_counts`: per tag, how many live posts carry it.

Fed by the posts stream, at schema 2 (`posts.contract`: every PostCreated and PostEdited carries
`tags`; older events are upcast on the way in). One item per tag ever seen:
`pk = "tag#<tag>"`, `sk = "count"`, attributes `tag` and `post_count`, the latter written only with
ADD (+1 per tag of a created post; an edit -1 for each tag it drops and +1 for each it adds; a
live post's PostDeleted -1 per tag it had). ADDs from different post streams commute, and `tag`
is SET to the same value by every stream, so the table ends the same whatever the order of the
streams. A tag whose posts are all gone keeps its item at 0.

Each event is folded alone: a PostEdited carries the tags it replaces (`previous_tags`, posts
schema 3) and a PostDeleted the tags it removes (schema 2). `InMemoryProjection` also folds older
events, from the per-stream state it keeps (the post's current tags, whether it is live).
"""

from __future__ import annotations

from escore.envelope import Envelope
from escore.projection import ProjectionSpec, StreamState, Write, count
from posts.contract import PostCreated, PostDeleted, PostEdited

NAME = "hashtag_counts"
COUNT_SK = "count"


def tag_key(tag: str) -> tuple[str, str]:
    return (f"tag#{tag}", COUNT_SK)


def _count(tag: str, delta: int) -> Write:
    return count(tag_key(tag), set={"tag": tag}, add={"post_count": delta})


def _post_created(state: StreamState, event: PostCreated, _: Envelope) -> tuple[StreamState, list[Write]]:
    tags = event.tags
    return {"live": True, "tags": tags}, [_count(tag, 1) for tag in tags]


def _post_edited(state: StreamState, event: PostEdited, _: Envelope) -> tuple[StreamState, list[Write]]:
    previous = event.previous_tags  # schema 3; else the state's
    if previous is None:
        if not state.get("live"):
            return state, []
        previous = state.get("tags", ())
    old, new = set(previous), set(event.tags)
    writes = [_count(tag, -1) for tag in sorted(old - new)] + [_count(tag, 1) for tag in sorted(new - old)]
    return {**state, "live": True, "tags": sorted(new)}, writes


def _post_deleted(state: StreamState, event: PostDeleted, _: Envelope) -> tuple[StreamState, list[Write]]:
    tags = event.tags  # schema 2; else the state's
    if tags is None:
        if not state.get("live"):
            return state, []
        tags = state.get("tags", ())
    return {"live": False}, [_count(tag, -1) for tag in tags]


PROJECTION = ProjectionSpec(
    NAME,
    {
        PostCreated: _post_created,
        PostEdited: _post_edited,
        PostDeleted: _post_deleted,
    },
)
