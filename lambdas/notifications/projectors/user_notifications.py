"""`user_notifications`: who has which handle, and the posts that mention each handle.

Fed by the profiles stream (UserRegistered) and the posts stream (PostCreated, PostEdited). Items:

- `pk = "user#<user_id>"`, `sk = "handle"`: `{user_id, handle}`, and `pk = "handle#<handle>"`,
  `sk = "user"`: the same, the other way round. Owned by the user's stream (a handle is unique and
  never changes: profiles claims it at registration).
- `pk = "mentions#<handle>"`, `sk = "<created_at>#<post_id>"` (the post's creation time, so a query
  backwards reads newest first): `{post_id, author_id, text, created_at}`, one per (handle, post),
  owned by the post's stream. A PostCreated writes one per handle its text mentions
  (`notifications.domain.mentions`); a PostEdited writes one per handle its new text mentions
  (`update(create=True)`: it sets the text on an item that exists and creates one that does not).

Folds are pure and fold each event alone (a PostEdited carries the post's author and creation
time from posts schema 3); an edit before schema 3 is skipped unless the per-stream state of
replay's fold knows the post. Deleting a post, or an edit that drops a mention, leaves the items:
they are the record of who was notified.

The side effect (`effects`, notifications.effects): the engine hands it the writes applied for the
first time by a delivery of a live event; a mention item *created* by one is a notification. An
edit that mentions a handle again updates that handle's item (no notification); one that adds a
handle creates its item (a notification for the newly mentioned only).
"""

from __future__ import annotations

from escore.envelope import Envelope
from escore.projection import ProjectionSpec, StreamState, Write, update
from notifications.domain import mentions
from notifications.effects import build_effects
from notifications.items import NAME, handle_key, mention_key, user_key
from posts.contract import PostCreated, PostEdited
from profiles.contract import UserRegistered


def _user_registered(state: StreamState, event: UserRegistered, _: Envelope) -> tuple[StreamState, list[Write]]:
    fields = {"user_id": event.user_id, "handle": event.handle}
    return state, [update(user_key(event.user_id), set=fields, create=True),
                   update(handle_key(event.handle), set=fields, create=True)]


def _mention_writes(state: StreamState, text: str) -> list[Write]:
    fields = {"post_id": state["post_id"], "author_id": state["author_id"], "text": text,
              "created_at": state["created_at"]}
    return [update(mention_key(handle, state["created_at"], state["post_id"]), set=fields, create=True)
            for handle in mentions(text)]


def _post_created(state: StreamState, event: PostCreated, envelope: Envelope) -> tuple[StreamState, list[Write]]:
    state = {"post_id": event.post_id, "author_id": event.author_id, "created_at": envelope.occurred_at}
    return state, _mention_writes(state, event.text)


def _post_edited(state: StreamState, event: PostEdited, envelope: Envelope) -> tuple[StreamState, list[Write]]:
    if event.author_id and event.created_at:  # posts schema 3 carries the post's facts
        post_id = state.get("post_id") or envelope.stream_id.partition("-")[2]  # `post-<post_id>`
        state = {**state, "post_id": post_id, "author_id": event.author_id, "created_at": event.created_at}
    if not state.get("created_at"):
        return state, []
    return state, _mention_writes(state, event.text)


PROJECTION = ProjectionSpec(
    NAME,
    {
        UserRegistered: _user_registered,
        PostCreated: _post_created,
        PostEdited: _post_edited,
    },
    effects=build_effects,
)
