"""`user_timeline`: each user's posts, newest first, deleted ones removed, edits applied.

Fed by the posts stream. One item per live post: `pk = "timeline#<author_id>"`,
`sk = "<created_at>#<post_id>"` (created_at is the PostCreated's occurred_at, fixed-width RFC 3339,
so the sort key orders by time, then post id), attributes `post_id`, `text`, `created_at`.
A query with ScanIndexForward=False reads newest first. The entry is owned by the post's stream
(its `_v` is the stream's version); a PostDeleted leaves a tombstone (`_deleted`, expiring), which
readers skip. PostEdited and PostDeleted carry the post's author and creation time (posts schemas 3
and 2), so each event is folded alone; `InMemoryProjection` also folds older events, from the
per-stream state it keeps.
"""

from __future__ import annotations

from escore.envelope import Envelope
from escore.projection import ProjectionSpec, StreamState, Write, delete, put, update
from posts.contract import PostCreated, PostDeleted, PostEdited

NAME = "user_timeline"


def timeline_pk(user_id: str) -> str:
    return f"timeline#{user_id}"


def timeline_sk(created_at: str, post_id: str) -> str:
    return f"{created_at}#{post_id}"


def _entry_key(state: StreamState) -> tuple[str, str]:
    return (timeline_pk(state["author_id"]), timeline_sk(state["created_at"], state["post_id"]))


def _post_created(state: StreamState, event: PostCreated, envelope: Envelope) -> tuple[StreamState, list[Write]]:
    post_id, created_at = event.post_id, envelope.occurred_at
    new_state = {"author_id": event.author_id, "post_id": post_id, "created_at": created_at, "live": True}
    entry = {"post_id": post_id, "text": event.text, "created_at": created_at}
    return new_state, [put(_entry_key(new_state), entry)]


def _known(state: StreamState, event: PostEdited | PostDeleted, envelope: Envelope) -> StreamState:
    """The post's facts: from the event (schemas that carry them), else from the stream state."""
    if event.author_id and event.created_at:
        post_id = state.get("post_id") or envelope.stream_id.partition("-")[2]  # `post-<post_id>`
        return {"live": True, **state, "author_id": event.author_id, "created_at": event.created_at,
                "post_id": post_id}
    return state


def _post_edited(state: StreamState, event: PostEdited, envelope: Envelope) -> tuple[StreamState, list[Write]]:
    state = _known(state, event, envelope)
    if not state.get("live"):
        return state, []
    return state, [update(_entry_key(state), set={"text": event.text})]


def _post_deleted(state: StreamState, event: PostDeleted, envelope: Envelope) -> tuple[StreamState, list[Write]]:
    state = _known(state, event, envelope)
    if not state.get("live"):
        return state, []
    return {**state, "live": False}, [delete(_entry_key(state))]


PROJECTION = ProjectionSpec(
    NAME,
    {
        PostCreated: _post_created,
        PostEdited: _post_edited,
        PostDeleted: _post_deleted,
    },
)
