"""The posts service's REST API (CONTRACT §3, "posts"): one Lambda behind API Gateway.

    POST   /posts                  {"author_id", "text"}               -> 201 {"post_id", "version": 1}
    PATCH  /posts/{post_id}        {"text", "expected_version"}        -> 200 {"post_id", "version"}
    DELETE /posts/{post_id}?expected_version=N (optional)              -> 200 {"post_id", "version"}
    GET    /posts/{post_id}                                            -> 200 the post

Reads fold the Post from the event store (strongly consistent): a GET reflects every command
answered before it. The routes parse (pydantic), make one call into `PostCommands`, and return
its answer; escore.http does the rest (errors, idempotency, correlation ids).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any
from uuid import UUID

from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from escore.aggregate import CommandContext, Repository, canonical_uuid
from escore.envelope import new_id
from escore.http import JsonApi
from escore.runtime import Handler, lazy, require
from escore.store import EventStore
from posts.domain import KIND, Post

SERVICE = "posts"
ENV_SERVICE = "SERVICE_NAME"
ENV_EVENT_STORE_TABLE = "EVENT_STORE_TABLE"
ENV_SNAPSHOT_EVERY = "SNAPSHOT_EVERY"  # optional: snapshot a post every N events (0, the default: never)

Text = Annotated[StrictStr, Field(min_length=1, max_length=2000)]
Version = Annotated[StrictInt, Field(ge=1)]


class CreatePost(BaseModel):
    model_config = ConfigDict(extra="forbid")

    author_id: UUID
    text: Text


class EditPost(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Text
    expected_version: Version


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


def answer(post_id: str, version: int) -> dict[str, Any]:
    return {"post_id": post_id, "version": version}


def build(env: Mapping[str, str], store: EventStore | None = None, *, snapshot_every: int | None = None) -> Handler:
    """The posts API handler. `store` defaults to the DynamoDB event store named by EVENT_STORE_TABLE."""
    service = env.get(ENV_SERVICE) or SERVICE
    if store is None:
        from escore.dynamodb_store import DynamoDBEventStore  # boto3 only when no store is given

        store = DynamoDBEventStore(require(env, ENV_EVENT_STORE_TABLE))
    if snapshot_every is None:
        snapshot_every = int(env.get(ENV_SNAPSHOT_EVERY) or 0)
    commands = PostCommands(Repository(store, Post, service, snapshot_every=snapshot_every))
    api = JsonApi(service, store)

    @api.post("/posts", status=201)
    def create_post(body: CreatePost) -> dict[str, Any]:
        return commands.create(str(body.author_id), body.text, api.command)

    @api.patch("/posts/{post_id}")
    def edit_post(post_id: str, body: EditPost) -> dict[str, Any]:
        return commands.edit(post_id, body.text, body.expected_version, api.command)

    @api.delete("/posts/{post_id}")
    def delete_post(post_id: str, expected_version: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
        return commands.delete(post_id, expected_version, api.command)

    @api.get("/posts/{post_id}")
    def get_post(post_id: str) -> dict[str, Any]:
        return commands.get(post_id)

    return api


handler = lazy(build)
