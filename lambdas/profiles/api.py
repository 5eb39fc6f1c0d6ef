"""The profiles service's REST API (docs/api.md, "profiles"): one Lambda behind API Gateway.

    POST  /users                     {"handle", "display_name"}               -> 201 {"user_id", "version": 1}
    PATCH /users/{user_id}           {"display_name", "expected_version"?}    -> 200 {"user_id", "version"}
    GET   /users/{user_id}                                                    -> 200 the profile
    GET   /users/{user_id}/posts?limit=1-100&cursor=                          -> 200 {"items", "next_cursor"}

The profile (handle, display_name, version) is folded from the event store, so a GET reflects
every command answered before it; only `post_count` and the timeline come from projections
(`user_profiles`, `user_timeline`), which are eventually consistent by contract. A handle is
unique through a claim written in the same append as UserRegistered (409 `handle_taken`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Protocol, TypeVar

from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import Field, StrictInt, StrictStr

from escore.aggregate import AggregateNotFound, CommandContext, Repository, canonical_uuid
from escore.app import ServiceApp
from escore.cursors import InvalidCursor
from escore.envelope import new_id
from escore.http import validation_error
from escore.models import Answer, Body
from escore.runtime import Handler, lazy
from escore.store import EventStore
from profiles.contract import EVENTS
from profiles.domain import KIND, User
from profiles.readmodels import ProfileReadModel, TimelineReadModel

USER_PROFILES = "user_profiles"  # the projections this API reads

USER_TIMELINE = "user_timeline"
DEFAULT_PAGE_SIZE = 20
T = TypeVar("T")

Handle = Annotated[StrictStr, Field(pattern=r"^[a-z0-9_]{3,30}$")]
DisplayName = Annotated[StrictStr, Field(min_length=1, max_length=100)]
Id = Annotated[str, Field(json_schema_extra={"format": "uuid"})]  # an id a service gave out


class RegisterUser(Body):
    handle: Handle
    display_name: DisplayName


class ChangeDisplayName(Body):
    display_name: DisplayName
    expected_version: Annotated[StrictInt, Field(ge=1)] | None = None


class UserAnswer(Answer):
    """What a command on a user answers: the user and its version after the command."""

    user_id: Id
    version: int


class UserView(Answer):
    """A profile: from the user's events, and `post_count` from the posts stream (eventually consistent)."""

    user_id: Id
    handle: str
    display_name: str
    version: int
    post_count: int


class TimelineItem(Answer):
    post_id: Id
    text: str
    created_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class TimelinePage(Answer):
    """A page of a user's posts, newest first (deleted posts left out); `next_cursor` null on the last page."""

    items: list[TimelineItem]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: no more")


class PostCounts(Protocol):
    """The `user_profiles` projection, as this API reads it (profiles.readmodels.ProfileReadModel)."""

    def post_count(self, user_id: str) -> int: ...


class Timelines(Protocol):
    """The `user_timeline` projection (profiles.readmodels.TimelineReadModel); raises InvalidCursor."""

    def page(self, user_id: str, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]: ...


class UserCommands:
    """The profiles use cases: one command or query each."""

    def __init__(
        self,
        users: Repository[User],
        profiles: Callable[[], PostCounts],
        timeline: Callable[[], Timelines],
    ) -> None:
        self.users = users
        self.profiles = profiles
        self.timeline = timeline

    def register(self, handle: str, display_name: str, context: CommandContext) -> dict[str, Any]:
        user = User(new_id())
        events, claims = user.register(handle, display_name)
        version = self.users.save(user, events, context, claims=claims, answer=lambda v: answer(user.id, v))
        return answer(user.id, version)

    def change_display_name(
        self, user_id: str, display_name: str, expected_version: int | None, context: CommandContext
    ) -> dict[str, Any]:
        user_id = canonical_uuid(user_id, KIND)
        user = self.users.execute(
            user_id,
            lambda u: u.change_display_name(display_name, expected_version),
            context,
            answer=lambda v: answer(user_id, v),
        )
        return answer(user.id, user.version)

    def get(self, user_id: str) -> dict[str, Any]:
        user = self.users.get(canonical_uuid(user_id, KIND), KIND)
        return user.view(post_count=self.profiles().post_count(user.id))

    def posts(self, user_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
        user_id = canonical_uuid(user_id, KIND)
        try:
            items, next_cursor = self.timeline().page(user_id, limit, cursor)
        except InvalidCursor as exc:  # the request itself is at fault: 422 before the user's 404
            raise validation_error(
                [{"loc": ["query", "cursor"], "type": "invalid_cursor", "msg": "not a cursor this API gave out"}]
            ) from exc
        if self.users.store.current_version(User.stream_id_for(user_id)) == 0:
            raise AggregateNotFound(KIND, user_id)
        return {"items": items, "next_cursor": next_cursor}


def answer(user_id: str, version: int) -> dict[str, Any]:
    return {"user_id": user_id, "version": version}


def build(
    env: Mapping[str, str],
    store: EventStore | None = None,
    profiles: PostCounts | None = None,
    timeline: Timelines | None = None,
    *,
    snapshot_every: int | None = None,
) -> Handler:
    """The profiles API handler, on its event store and two read models (escore.app)."""
    app = ServiceApp(env, EVENTS, store=store, snapshot_every=snapshot_every)
    commands = UserCommands(
        app.repository(User),
        app.read_model(USER_PROFILES, ProfileReadModel, profiles),
        app.read_model(USER_TIMELINE, TimelineReadModel, timeline),
    )
    api = app.api

    @api.post("/users", status=201)
    def register_user(body: RegisterUser) -> UserAnswer:
        """Register a user.
        The handle is unique (409 `handle_taken`)."""
        return UserAnswer.model_validate(commands.register(body.handle, body.display_name, api.command))

    @api.patch("/users/{user_id}")
    def change_display_name(user_id: str, body: ChangeDisplayName) -> UserAnswer:
        """Change a user's display name.
        With `expected_version`, only at that version (else 409 `conflict`)."""
        return UserAnswer.model_validate(
            commands.change_display_name(user_id, body.display_name, body.expected_version, api.command))

    @api.get("/users/{user_id}")
    def get_user(user_id: str) -> UserView:
        """Read a profile.
        `post_count` is a projection of the posts stream (eventually consistent)."""
        return UserView.model_validate(commands.get(user_id))

    @api.get("/users/{user_id}/posts")
    def list_user_posts(
        user_id: str,
        limit: Annotated[int, Query(ge=1, le=100, description="page size")] = DEFAULT_PAGE_SIZE,
        cursor: Annotated[str | None, Query(description="the `next_cursor` of the previous page")] = None,
    ) -> TimelinePage:
        """List a user's posts, newest first.
        A projection of the posts stream (eventually consistent); an invalid cursor is a 422, an unknown user a 404."""
        # `cursor=` (empty) is the first page
        return TimelinePage.model_validate(commands.posts(user_id, limit, cursor or None))

    return api


handler = lazy(build)
