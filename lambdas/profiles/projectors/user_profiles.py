"""`user_profiles`: per user, the profile fields and `post_count`.

Fed by the profiles stream (UserRegistered, DisplayNameChanged) and the posts stream
(PostCreated +1, PostDeleted -1, PostEdited nothing). One item per user, `pk = "user#<user_id>"`,
`sk = "profile"`: `user_id`, `handle`, `display_name`, owned by the user's own stream (`update`:
the item's `_v` is that stream's version), and `post_count`, shared by every post stream (`count`).
The two kinds of writes commute, so the item ends the same whatever the order of the streams (a
PostCreated may be projected before its author's UserRegistered).

Each event is folded alone: a PostDeleted carries its author (posts schema 2). The stream state is
kept only by `InMemoryProjection`, which also folds PostDeleted events written before that schema.
"""

from __future__ import annotations

from escore.envelope import Envelope
from escore.projection import ProjectionSpec, StreamState, Write, count, update
from posts.contract import PostCreated, PostDeleted, PostEdited
from profiles.contract import DisplayNameChanged, UserRegistered

NAME = "user_profiles"
PROFILE_SK = "profile"


def profile_key(user_id: str) -> tuple[str, str]:
    return (f"user#{user_id}", PROFILE_SK)


def _user_id(event: Envelope) -> str:
    """The user of a profiles stream: its id is `user-<user_id>` (escore.aggregate.Aggregate.stream_id_for)."""
    return event.stream_id.partition("-")[2]


def _user_registered(state: StreamState, event: UserRegistered, _: Envelope) -> tuple[StreamState, list[Write]]:
    fields = {"user_id": event.user_id, "handle": event.handle, "display_name": event.display_name}
    return {"user_id": event.user_id}, [update(profile_key(event.user_id), set=fields, create=True)]


def _display_name_changed(
    state: StreamState, event: DisplayNameChanged, envelope: Envelope
) -> tuple[StreamState, list[Write]]:
    return state, [update(profile_key(_user_id(envelope)), set={"display_name": event.display_name})]


def _post_created(state: StreamState, event: PostCreated, _: Envelope) -> tuple[StreamState, list[Write]]:
    author_id = event.author_id
    return {"author_id": author_id, "live": True}, [count(profile_key(author_id), add={"post_count": 1})]


def _post_edited(state: StreamState, event: PostEdited, _: Envelope) -> tuple[StreamState, list[Write]]:
    return state, []


def _post_deleted(state: StreamState, event: PostDeleted, _: Envelope) -> tuple[StreamState, list[Write]]:
    if state and not state.get("live"):  # known (in memory) to be deleted already
        return state, []
    author_id = event.author_id or state["author_id"]  # schema 2 carries it
    return {**state, "author_id": author_id, "live": False}, [count(profile_key(author_id), add={"post_count": -1})]


PROJECTION = ProjectionSpec(
    NAME,
    {
        UserRegistered: _user_registered,
        DisplayNameChanged: _display_name_changed,
        PostCreated: _post_created,
        PostEdited: _post_edited,
        PostDeleted: _post_deleted,
    },
)
