"""The posts service's event contract: its events with their schemas and upcast steps, and the hashtag rule.

What every consumer of the posts stream depends on, and nothing else of the service: the Post
aggregate (`posts.domain`) writes these classes, and projections fold them (escore.contract).

Schemas:
- `PostCreated` 1: `{post_id, author_id, text}`; 2 (current): adds `tags`.
- `PostEdited` 1: `{text}`; 2: adds `tags` (an edit can change a post's tags); 3 (current): adds
  the post's `author_id` and `created_at` and the tags it replaces, `previous_tags`.
- `PostDeleted` 1: `{}`; 2 (current): the post's `author_id`, `created_at` and `tags`.

The schema-3 and schema-2 additions are facts about the post that an older event does not hold
and no step can compute from it: the steps 2 -> 3 and 1 -> 2 leave them out, and a reader that
needs them takes them from the post's earlier events (`InMemoryProjection` keeps that per-stream
state; the live projectors, which fold events alone, only ever see events written with them).

`tags` is always `hashtags(text)`: the step 1 -> 2 computes it exactly as the domain does when it
writes an event at schema 2, so an upcast old event and a new one are indistinguishable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from escore.aggregate import DomainEvent
from escore.contract import EventContract, steps

MAX_TAG_LENGTH = 50
MAX_TAGS_PER_POST = 30

# A tag body is ASCII only; the boundaries use Unicode \w so that "#café" is no tag (rather than "caf").
_HASHTAG = re.compile(rf"(?<![\w#])#([A-Za-z0-9_]{{1,{MAX_TAG_LENGTH}}})(?!\w)")
TAG_PATTERN = re.compile(rf"[A-Za-z0-9_]{{1,{MAX_TAG_LENGTH}}}")  # what `GET /tags/{tag}` accepts


def hashtags(text: str) -> list[str]:
    """The tags of a post's text: THE rule (the domain and the upcasters both call this).

    - A hashtag is `#` followed by 1-50 ASCII letters, digits or underscores (`[A-Za-z0-9_]`), the
      whole run: a run longer than 50, or one that goes on with any other letter or digit (`#café`,
      `#tag٣`), is no tag at all, never a truncated one.
    - The `#` must not follow a letter, digit, underscore or another `#` (`a#b`, `##b`, `x.com/p#s`
      are not tags; `(#b)`, `"#b"`, `/#b` and `#b,` are).
    - Lower-cased (ASCII), de-duplicated; the first 30 distinct tags in order of appearance are
      kept (a bound, so one post's tags always fit one projection transaction); returned sorted.

    ASCII, not Unicode letters: a tag is a key replayed forever, so the rule must not move with the
    Unicode tables of the runtime (case mapping, letter classes), and it is URL-safe as it is.
    """
    found: dict[str, None] = {}
    for match in _HASHTAG.finditer(text):
        found.setdefault(match.group(1).lower(), None)
        if len(found) == MAX_TAGS_PER_POST:
            break
    return sorted(found)


def normalize_tag(tag: str) -> str | None:
    """A tag as clients may write it in a path (any case, no `#`), lower-cased; None if invalid."""
    return tag.lower() if TAG_PATTERN.fullmatch(tag) else None


def _text_tags(data: dict[str, Any]) -> list[str]:
    # A step adds what the new schema has; it does not validate. A malformed old event (no text)
    # gets no tags and fails, if at all, in the reader that needs its text (one event reported
    # failed), instead of failing the upcast, which the archive reader would raise for a whole read.
    text = data.get("text")
    return hashtags(text) if isinstance(text, str) else []


def post_created_1_to_2(data: dict[str, Any]) -> dict[str, Any]:
    """PostCreated 1 -> 2: `tags` from the text (`hashtags`)."""
    return {**data, "tags": _text_tags(data)}


def post_edited_1_to_2(data: dict[str, Any]) -> dict[str, Any]:
    """PostEdited 1 -> 2: `tags` from the new text (`hashtags`)."""
    return {**data, "tags": _text_tags(data)}


def post_edited_2_to_3(data: dict[str, Any]) -> dict[str, Any]:
    """PostEdited 2 -> 3: the post's facts are not in the old event; nothing to add (see above)."""
    return data


def post_deleted_1_to_2(data: dict[str, Any]) -> dict[str, Any]:
    """PostDeleted 1 -> 2: the post's facts are not in the old event; nothing to add (see above)."""
    return data


@dataclass(frozen=True)
class TaggedText(DomainEvent):
    """An event that carries a post's text, and so its `tags` (schema 2), derived from the text."""

    text: str
    stored_extras = frozenset({"tags"})  # decoded events keep their stored `tags` (escore.aggregate)

    @property
    def tags(self) -> list[str]:
        """The tags the event carries (schema 2; `hashtags(text)` by the contract), else `hashtags(text)`."""
        stored = self.__dict__.get("tags")
        return stored if type(stored) is list else hashtags(self.text)

    def to_data(self) -> dict[str, Any]:
        data = {name: value for name, value in super().to_data().items() if value is not None}
        return {**data, "tags": self.tags}


@dataclass(frozen=True, kw_only=True)
class PostCreated(TaggedText):
    type = "PostCreated"
    schema_version = 2
    upcasts = steps(post_created_1_to_2)
    post_id: str
    author_id: str


@dataclass(frozen=True, kw_only=True)
class PostEdited(TaggedText):
    type = "PostEdited"
    schema_version = 3
    upcasts = steps(post_edited_1_to_2, post_edited_2_to_3)
    # Schema 3; absent (None) in events written before it.
    author_id: str | None = None
    created_at: str | None = None
    previous_tags: list[str] | None = None


@dataclass(frozen=True, kw_only=True)
class PostDeleted(DomainEvent):
    type = "PostDeleted"
    schema_version = 2
    upcasts = steps(post_deleted_1_to_2)
    # Schema 2; absent (None) in events written before it.
    author_id: str | None = None
    created_at: str | None = None
    tags: list[str] | None = None

    def to_data(self) -> dict[str, Any]:
        return {name: value for name, value in super().to_data().items() if value is not None}


EVENTS = EventContract("posts", (PostCreated, PostEdited, PostDeleted))
