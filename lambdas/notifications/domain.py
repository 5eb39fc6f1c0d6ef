"""The mention rule and what a notification says (pure).

`mentions(text)` is THE rule, used by the folds (live and replay alike), so the read model and
what is sent agree. A mention is `@` and a handle as profiles accepts one (`[a-z0-9_]{3,30}`,
`profiles.api.Handle`), matched case-insensitively, the whole run:

- the `@` must not follow a letter, digit, underscore or another `@` (`bob@example.com`, `@@bob`
  are no mentions; `(@bob)`, `"@bob"`, `@bob,` are);
- the run of `[A-Za-z0-9_]` after it is the handle only if it is 3-30 long and does not go on with
  another letter or digit (`@bobé`, a 31-character run: no mention, never a truncated one);
- lower-cased, de-duplicated, the first MAX_MENTIONS distinct handles kept (a bound: one post's
  writes stay one batch), returned sorted.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

MAX_MENTIONS = 20
_MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_]{3,30})(?![\w])")


def mentions(text: str) -> list[str]:
    """The handles `text` mentions (see the module's rule), sorted."""
    found: dict[str, None] = {}
    for match in _MENTION.finditer(text):
        found.setdefault(match.group(1).lower(), None)
        if len(found) == MAX_MENTIONS:
            break
    return sorted(found)


@dataclass(frozen=True)
class Notification:
    """`user_id` (who has `handle`) was mentioned by `author_id` in `post_id`: what a notifier sends."""

    user_id: str
    handle: str
    post_id: str
    author_id: str
    text: str
    mentioned_at: str  # the occurred_at of the event that first mentioned the handle in the post
    event_id: str  # that event: a subscriber can drop a repeat by it (there is none by design)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
