"""The Post aggregate: a user's text, which can be edited until it is deleted.

Pure: commands check the post's state and return events; `apply` folds events into state.

PostCreated and PostEdited carry `tags`, always `hashtags(text)`, derived in `to_data` so an
event can never carry tags that disagree with its text. PostEdited (schema 3) and PostDeleted
(schema 2) also carry what their consumers would otherwise have to remember per post: the post's
`author_id` and `created_at`, and the tags the edit replaces (`previous_tags`) or the deletion
removes (`tags`). Projections then fold each event alone (`escore.projection`). The events
are the service's contract (`posts.contract`), with their schemas and upcast steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from escore.aggregate import Aggregate, AggregateNotFound, DomainEvent, VersionConflict
from posts.contract import PostCreated, PostDeleted, PostEdited, hashtags

KIND = "post"


class Post(Aggregate):
    stream_prefix = "post"
    event_types = (PostCreated, PostEdited, PostDeleted)

    def __init__(self, post_id: str) -> None:
        super().__init__(post_id)
        self.author_id = ""
        self.text = ""
        self.deleted = False

    # commands
    def create(self, author_id: str, text: str) -> list[DomainEvent]:
        if self.exists:
            raise VersionConflict(f"post {self.id} already exists", self.version)
        return [PostCreated(post_id=self.id, author_id=author_id, text=text)]

    def edit(self, text: str, expected_version: int | None) -> list[DomainEvent]:
        self._require_live(expected_version)
        return [PostEdited(text=text, author_id=self.author_id, created_at=self.created_at,
                           previous_tags=hashtags(self.text))]

    def delete(self, expected_version: int | None) -> list[DomainEvent]:
        self._require_live(expected_version)
        return [PostDeleted(author_id=self.author_id, created_at=self.created_at, tags=hashtags(self.text))]

    def require_visible(self) -> None:
        """A read: a deleted post is gone."""
        if not self.exists or self.deleted:
            raise AggregateNotFound(KIND, self.id)

    def _require_live(self, expected_version: int | None) -> None:
        if not self.exists:
            raise AggregateNotFound(KIND, self.id)
        if self.deleted:
            raise VersionConflict(f"post {self.id} is deleted", self.version)
        self.require_version(expected_version)

    # state
    def apply(self, event: DomainEvent) -> None:
        match event:
            case PostCreated(author_id=author_id, text=text):
                self.author_id = author_id
                self.text = text
            case PostEdited(text=text):
                self.text = text
            case PostDeleted():
                self.deleted = True

    def state(self) -> dict[str, Any]:
        return {"author_id": self.author_id, "text": self.text, "deleted": self.deleted}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        self.author_id = str(state.get("author_id", ""))
        self.text = str(state.get("text", ""))
        self.deleted = bool(state.get("deleted", False))

    def view(self) -> dict[str, Any]:
        """GET /posts/{post_id}."""
        return {
            "post_id": self.id,
            "author_id": self.author_id,
            "text": self.text,
            "version": self.version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
