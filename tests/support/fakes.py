"""Small in-memory stand-ins for the profiles read models (profiles.readmodels' interface)."""

from __future__ import annotations

from typing import Any

from escore.cursors import InvalidCursor


class FakeProfiles:
    def __init__(self, counts: dict[str, int] | None = None) -> None:
        self.counts = dict(counts or {})

    def post_count(self, user_id: str) -> int:
        return self.counts.get(user_id, 0)


class FakeTimeline:
    """Items per user, newest first; the cursor is the index of the next item, as `"c<n>"`."""

    def __init__(self, items: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.items = {user: list(entries) for user, entries in (items or {}).items()}
        self.calls: list[tuple[str, int, str | None]] = []

    def page(self, user_id: str, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        self.calls.append((user_id, limit, cursor))
        start = 0
        if cursor is not None:
            if not cursor.startswith("c") or not cursor[1:].isdigit():
                raise InvalidCursor(cursor)
            start = int(cursor[1:])
        entries = sorted(self.items.get(user_id, []), key=lambda e: (e["created_at"], e["post_id"]), reverse=True)
        page = entries[start : start + limit]
        more = start + limit < len(entries)
        return page, (f"c{start + limit}" if more else None)
