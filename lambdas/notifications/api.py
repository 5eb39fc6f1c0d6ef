"""The notifications service's REST API (docs/notifications.md): one route.

    GET /users/{user_id}/notifications?limit=1-100&cursor=   -> 200 {"items", "next_cursor"}

A projection (`user_notifications`) of the posts and profiles streams, eventually consistent: the
posts that mention the user's handle, newest first, their own posts left out. 404 `not_found` for
a user whose registration is not (yet) projected there; 422 for a bad `limit` or `cursor`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Protocol

from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import Field

from escore.aggregate import AggregateNotFound, canonical_uuid
from escore.app import ServiceApp
from escore.cursors import InvalidCursor, decode_cursor
from escore.http import validation_error
from escore.models import Answer
from escore.runtime import Handler, lazy
from escore.store import EventStore
from notifications.contract import EVENTS
from notifications.items import NAME as USER_NOTIFICATIONS
from notifications.readmodels import NotificationReadModel

DEFAULT_PAGE_SIZE = 20
KIND = "user"
Id = Annotated[str, Field(json_schema_extra={"format": "uuid"})]


class NotificationItem(Answer):
    """A post that mentions the user: its id, author, text (as last edited with the mention) and creation time."""

    post_id: Id
    author_id: Id
    text: str
    created_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class NotificationPage(Answer):
    """A page of a user's notifications, newest first; `next_cursor` null on the last page."""

    items: list[NotificationItem]
    next_cursor: str | None


class Notifications(Protocol):
    def handle_of(self, user_id: str) -> str | None: ...

    def page(self, user_id: str, handle: str, limit: int, cursor: str | None
             ) -> tuple[list[dict[str, Any]], str | None]: ...


def list_page(read: Callable[[], Notifications], user_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
    user_id = canonical_uuid(user_id, KIND)
    try:
        if cursor is not None:
            decode_cursor(cursor)  # the request itself is at fault: 422 before the user's 404
        model = read()
        handle = model.handle_of(user_id)
        if handle is None:
            raise AggregateNotFound(KIND, user_id)
        items, next_cursor = model.page(user_id, handle, limit, cursor)
    except InvalidCursor as exc:
        raise validation_error(
            [{"loc": ["query", "cursor"], "type": "invalid_cursor", "msg": "not a cursor this API gave out"}]
        ) from exc
    return {"items": items, "next_cursor": next_cursor}


def build(env: Mapping[str, str], store: EventStore | None = None,
          notifications: Notifications | None = None) -> Handler:
    """The notifications API handler, on its read model (escore.app)."""
    app = ServiceApp(env, EVENTS, store=store)
    read = app.read_model(USER_NOTIFICATIONS, NotificationReadModel, notifications)
    api = app.api

    @api.get("/users/{user_id}/notifications")
    def list_user_notifications(
        user_id: str,
        limit: Annotated[int, Query(ge=1, le=100, description="page size")] = DEFAULT_PAGE_SIZE,
        cursor: Annotated[str | None, Query(description="the `next_cursor` of the previous page")] = None,
    ) -> NotificationPage:
        """List the posts that mention a user's handle, newest first.
        A projection of the posts and profiles streams (eventually consistent); an invalid cursor is a 422,
        a user not (yet) known there a 404."""
        # `cursor=` (empty) is the first page
        return NotificationPage.model_validate(list_page(read, user_id, limit, cursor or None))

    return api


handler = lazy(build)
