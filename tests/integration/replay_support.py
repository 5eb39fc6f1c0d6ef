"""Helpers of the archive, replay and verify tests: a random history, archive objects, table dumps."""

from __future__ import annotations

import gzip
import random
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from escore.envelope import Envelope, encode_record, format_timestamp
from escore.projection import InMemoryProjection, ProjectionSpec, from_item
from eventstack.archive import hour_prefix

BUCKET = "eventstack-archive-test"
T0 = datetime(2025, 11, 20, 8, 0, tzinfo=UTC)


def event(
    stream_id: str,
    version: int,
    type_: str,
    data: dict[str, Any],
    *,
    service: str | None = None,
    at: datetime = T0,
    schema_version: int = 1,
    event_id: str | None = None,
) -> Envelope:
    service = service or ("posts" if stream_id.startswith("post-") else "profiles")
    return Envelope(
        event_id or str(uuid.uuid4()), stream_id, version, type_, schema_version, service,
        format_timestamp(at), data, {"correlation_id": str(uuid.uuid4())},
    )


class History:
    """A random, valid history of the posts and profiles services, in commit order."""

    def __init__(self, seed: int, start: datetime = T0) -> None:
        self.rng = random.Random(seed)
        self.clock = start
        self.events: list[Envelope] = []
        self.users: list[str] = []
        self.posts: dict[str, dict[str, Any]] = {}  # post_id -> {"version", "live"}
        self.user_versions: dict[str, int] = {}

    def _tick(self) -> datetime:
        self.clock += timedelta(milliseconds=self.rng.randint(1, 2000))
        return self.clock

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def step(self) -> Envelope:
        rng = self.rng
        roll = rng.random()
        live = [p for p, s in self.posts.items() if s["live"]]
        if not self.users or roll < 0.08:
            user_id = self._uuid()
            self.users.append(user_id)
            self.user_versions[user_id] = 1
            new = event(f"user-{user_id}", 1, "UserRegistered",
                        {"user_id": user_id, "handle": f"u{len(self.users)}", "display_name": f"User {user_id[:4]}"},
                        at=self._tick(), event_id=self._uuid())
        elif roll < 0.12:
            user_id = rng.choice(self.users)
            self.user_versions[user_id] += 1
            new = event(f"user-{user_id}", self.user_versions[user_id], "DisplayNameChanged",
                        {"display_name": f"Name {rng.randint(0, 999)}"}, at=self._tick(), event_id=self._uuid())
        elif roll < 0.55 or not live:
            post_id = self._uuid()
            author = rng.choice(self.users) if rng.random() < 0.95 else self._uuid()  # an unknown author too
            self.posts[post_id] = {"version": 1, "live": True}
            new = event(f"post-{post_id}", 1, "PostCreated",
                        {"post_id": post_id, "author_id": author, "text": f"hello {rng.randint(0, 10**6)}"},
                        at=self._tick(), event_id=self._uuid())
        elif roll < 0.85:
            post_id = rng.choice(live)
            self.posts[post_id]["version"] += 1
            new = event(f"post-{post_id}", self.posts[post_id]["version"], "PostEdited",
                        {"text": f"edited {rng.randint(0, 10**6)}"}, at=self._tick(), event_id=self._uuid())
        else:
            post_id = rng.choice(live)
            self.posts[post_id]["version"] += 1
            self.posts[post_id]["live"] = False
            new = event(f"post-{post_id}", self.posts[post_id]["version"], "PostDeleted", {},
                        at=self._tick(), event_id=self._uuid())
        self.events.append(new)
        return new

    def run(self, count: int) -> list[Envelope]:
        return [self.step() for _ in range(count)]


def gz_lines(events: Iterable[Envelope]) -> bytes:
    return gzip.compress(b"".join(encode_record(e) for e in events), compresslevel=1)


def archive_key(service: str, hour: datetime, name: str) -> str:
    return f"{hour_prefix(service, hour)}eventstack-test-{service}-archive-{name}.gz"


def put_object(s3: Any, service: str, hour: datetime, name: str, events: Sequence[Envelope],
               bucket: str = BUCKET) -> str:
    key = archive_key(service, hour, name)
    s3.put_object(Bucket=bucket, Key=key, Body=gz_lines(events))
    return key


def archive_with_duplicates(
    s3: Any, events: Sequence[Envelope], rng: random.Random, *, per_object: int = 40,
    duplicate_rate: float = 0.1, start: datetime = T0, bucket: str = BUCKET,
) -> list[str]:
    """Write `events` as Firehose would (in order, per service, chunked into objects over hours),
    with some records delivered again in a later object (at-least-once)."""
    keys: list[str] = []
    for service in ("posts", "profiles"):
        mine = [e for e in events if e.service == service]
        redelivered: list[Envelope] = []
        for n, begin in enumerate(range(0, len(mine), per_object)):
            chunk = redelivered + mine[begin : begin + per_object]
            redelivered = [e for e in mine[begin : begin + per_object] if rng.random() < duplicate_rate]
            hour = start + timedelta(hours=n // 3)
            keys.append(put_object(s3, service, hour, f"{n:05d}", chunk, bucket))
        if redelivered:
            keys.append(put_object(s3, service, start + timedelta(hours=len(mine) // per_object // 3 + 1),
                                   "tail", redelivered, bucket))
    return keys


def fold(spec: ProjectionSpec, events: Iterable[Envelope]) -> dict[tuple[str, str], dict[str, Any]]:
    """The projection as a pure fold of the unique events (each stream in version order)."""
    unique: dict[str, Envelope] = {}
    for event in events:
        unique.setdefault(event.event_id, event)  # the first delivery of each event counts
    return InMemoryProjection(spec).apply(unique.values()).items


def read_model(client: Any, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    """A projection table's read-model items (no `$` bookkeeping items)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for page in client.get_paginator("scan").paginate(TableName=table):
        for raw in page["Items"]:
            item = from_item(raw)
            pk, sk = item.pop("pk"), item.pop("sk")
            if not pk.startswith("$"):
                out[(pk, sk)] = item
    return out


def checkpoints(client: Any, table: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for page in client.get_paginator("scan").paginate(TableName=table):
        for raw in page["Items"]:
            pk = raw["pk"]["S"]
            if pk.startswith("$stream#"):
                out[pk[len("$stream#"):]] = int(raw["v"]["N"])
    return out
