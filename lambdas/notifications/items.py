"""The item layout of `user_notifications` (its keys), shared by its folds, its effects and its reader.

See notifications.projectors.user_notifications for what each item holds.
"""

from __future__ import annotations

NAME = "user_notifications"
USER_SK = "handle"
HANDLE_SK = "user"
MENTIONS_PREFIX = "mentions#"


def user_key(user_id: str) -> tuple[str, str]:
    return (f"user#{user_id}", USER_SK)


def handle_key(handle: str) -> tuple[str, str]:
    return (f"handle#{handle}", HANDLE_SK)


def mentions_pk(handle: str) -> str:
    return f"{MENTIONS_PREFIX}{handle}"


def mention_key(handle: str, created_at: str, post_id: str) -> tuple[str, str]:
    return (mentions_pk(handle), f"{created_at}#{post_id}")


def mentioned_handle(key: tuple[str, str]) -> str | None:
    """The handle of a mention item's key; None for the other items."""
    return key[0][len(MENTIONS_PREFIX):] if key[0].startswith(MENTIONS_PREFIX) else None
