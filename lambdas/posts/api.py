"""The posts service's REST API (docs/api.md, "posts"): one Lambda behind API Gateway.

    POST   /posts                  {"author_id", "text"}               -> 201 {"post_id", "version": 1}
    PATCH  /posts/{post_id}        {"text", "expected_version"}        -> 200 {"post_id", "version"}
    DELETE /posts/{post_id}?expected_version=N (optional)              -> 200 {"post_id", "version"}
    GET    /posts/{post_id}                                            -> 200 the post
    GET    /tags/{tag}                                                 -> 200 {"tag", "post_count"}

Reads of a post fold the Post from the event store (strongly consistent): a GET reflects every
command answered before it. `GET /tags/{tag}` reads the `hashtag_counts` projection (eventually
consistent, docs/api.md): the tag is matched case-insensitively and answered lower-cased (the rule
is `posts.contract.hashtags`), 422 when it cannot be a tag, `post_count` 0 for a tag never seen. The routes parse (pydantic), make one call into `PostCommands`, and return
its answer; escore.http does the rest (errors, idempotency, correlation ids).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Protocol
from uuid import UUID

from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import Field, StrictInt, StrictStr

from escore.aggregate import CommandContext, Repository, canonical_uuid
from escore.app import ServiceApp
from escore.envelope import new_id
from escore.http import validation_error
from escore.models import Answer, Body
from escore.runtime import Handler, lazy
from escore.store import EventStore
from posts.contract import EVENTS, MAX_TAG_LENGTH, normalize_tag
from posts.domain import KIND, Post
from posts.readmodels import HashtagReadModel

HASHTAG_COUNTS = "hashtag_counts"  # the projection this API reads (GET /tags/{tag})

Text = Annotated[StrictStr, Field(min_length=1, max_length=2000)]
Version = Annotated[StrictInt, Field(ge=1)]
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Id = Annotated[str, Field(json_schema_extra={"format": "uuid"})]  # an id this service gave out


class CreatePost(Body):
    author_id: UUID
    text: Text


class EditPost(Body):
    text: Text
    expected_version: Version


class PostAnswer(Answer):
    """What a command on a post answers: the post and its version after the command."""

    post_id: Id
    version: int


class PostView(Answer):
    """A post as it is now (RFC 3339 UTC timestamps with microseconds)."""

    post_id: Id
    author_id: Id
    text: str
    version: int
    created_at: Timestamp
    updated_at: Timestamp


class TagCount(Answer):
    """How many live posts carry a tag (eventually consistent: a projection of the posts stream)."""

    tag: str = Field(description="the tag, lower-cased, without '#'")
    post_count: int


class PostCommands:
    """The posts use cases: each loads or creates a Post, runs one command, and saves its events."""

    def __init__(self, posts: Repository[Post]) -> None:
        self.posts = posts

    def create(self, author_id: str, text: str, context: CommandContext) -> dict[str, Any]:
        post = Post(new_id())
        events = post.create(author_id, text)
        version = self.posts.save(post, events, context, answer=lambda v: answer(post.id, v))
        return answer(post.id, version)

    def edit(self, post_id: str, text: str, expected_version: int, context: CommandContext) -> dict[str, Any]:
        post_id = canonical_uuid(post_id, KIND)
        post = self.posts.execute(
            post_id, lambda p: p.edit(text, expected_version), context, answer=lambda v: answer(post_id, v)
        )
        return answer(post.id, post.version)

    def delete(self, post_id: str, expected_version: int | None, context: CommandContext) -> dict[str, Any]:
        post_id = canonical_uuid(post_id, KIND)
        post = self.posts.execute(
            post_id, lambda p: p.delete(expected_version), context, answer=lambda v: answer(post_id, v)
        )
        return answer(post.id, post.version)

    def get(self, post_id: str) -> dict[str, Any]:
        post = self.posts.load(canonical_uuid(post_id, KIND))
        post.require_visible()
        return post.view()


class HashtagCounts(Protocol):
    """The `hashtag_counts` projection, as this API reads it (posts.readmodels.HashtagReadModel)."""

    def count(self, tag: str) -> int: ...


def tag_count(tag: str, counts: Callable[[], HashtagCounts]) -> dict[str, Any]:
    """GET /tags/{tag}: 422 for what cannot be a tag, else the live posts carrying it (0 if unknown)."""
    normalized = normalize_tag(tag)
    if normalized is None:
        raise validation_error([{
            "loc": ["path", "tag"], "type": "invalid_tag",
            "msg": f"a tag is 1-{MAX_TAG_LENGTH} letters (a-z, A-Z), digits or underscores, without '#'",
        }])
    return {"tag": normalized, "post_count": counts().count(normalized)}


def answer(post_id: str, version: int) -> dict[str, Any]:
    return {"post_id": post_id, "version": version}


def build(
    env: Mapping[str, str],
    store: EventStore | None = None,
    *,
    hashtags: HashtagCounts | None = None,
    snapshot_every: int | None = None,
) -> Handler:
    """The posts API handler, on its event store and the `hashtag_counts` read model (escore.app)."""
    app = ServiceApp(env, EVENTS, store=store, snapshot_every=snapshot_every)
    commands = PostCommands(app.repository(Post))
    counts = app.read_model(HASHTAG_COUNTS, HashtagReadModel, hashtags)
    api = app.api

    @api.post("/posts", status=201)
    def create_post(body: CreatePost) -> PostAnswer:
        """Create a post.
        Any `author_id` is accepted (the posts service does not call the profiles service)."""
        return PostAnswer.model_validate(commands.create(str(body.author_id), body.text, api.command))

    @api.patch("/posts/{post_id}")
    def edit_post(post_id: str, body: EditPost) -> PostAnswer:
        """Edit a post's text.
        `expected_version` must be the post's version (else 409 `conflict`); a deleted post is a 409."""
        return PostAnswer.model_validate(commands.edit(post_id, body.text, body.expected_version, api.command))

    @api.delete("/posts/{post_id}")
    def delete_post(post_id: str, expected_version: Annotated[int | None, Query(ge=1)] = None) -> PostAnswer:
        """Delete a post.
        With `expected_version`, only at that version (else 409); a post already deleted is a 409."""
        return PostAnswer.model_validate(commands.delete(post_id, expected_version, api.command))

    @api.get("/posts/{post_id}")
    def get_post(post_id: str) -> PostView:
        """Read a post.
        Strongly consistent: reflects every command answered before it; a deleted post is a 404."""
        return PostView.model_validate(commands.get(post_id))

    @api.get("/tags/{tag}")
    def get_tag(tag: str) -> TagCount:
        """Count the live posts carrying a tag.
        The tag is matched case-insensitively (1-50 of A-Z, a-z, 0-9, _; no '#'); 0 for a tag never seen."""
        return TagCount.model_validate(tag_count(tag, counts))

    return api


handler = lazy(build)
