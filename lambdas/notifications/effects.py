"""`user_notifications`' side effect: notify the user a newly created mention item names.

The engine (escore.engine, `effects`) calls `Notify` after a batch's writes with the writes that
batch applied for the first time, replayed events left out. So a notification goes out at most
once: the mention item's write is the marker, and a re-delivery of the event finds it applied and
hands nothing; a crash between the write and the publish loses that notification (never sends it
twice). The handle is resolved on the projection's active table (`handle#<handle>`, strongly
consistent): a handle nobody has yet is not notified (logged), nor is an author mentioning
themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from escore.engine import Applied
from escore.item_writes import item_key
from escore.readmodel import from_item
from notifications.domain import Notification
from notifications.items import handle_key, mentioned_handle
from notifications.notifier import Notifier, notifier_from_env

log = logging.getLogger(__name__)


class Notify:
    def __init__(self, notifier: Notifier, table: Callable[[], str], client: Any) -> None:
        self.notifier = notifier
        self._table = table
        self._client = client
        self.sent = 0  # notifications sent by this instance (tests, logs)

    def __call__(self, applied: Sequence[Applied]) -> None:
        users: dict[str, str | None] = {}
        for a in applied:
            handle = mentioned_handle(a.write.key)
            if handle is None or not a.created:
                continue
            if handle not in users:
                users[handle] = self._user_of(handle)
            user_id, fields = users[handle], a.write.set
            if user_id is None:
                log.info("not notified: no user has @%s (yet); post %s", handle, fields.get("post_id"))
                continue
            if user_id == fields.get("author_id"):
                continue  # mentioning yourself notifies nobody
            self.notifier.send(Notification(
                user_id=user_id, handle=handle, post_id=str(fields["post_id"]), author_id=str(fields["author_id"]),
                text=str(fields["text"]), mentioned_at=a.event.occurred_at, event_id=a.event.event_id))
            self.sent += 1

    def _user_of(self, handle: str) -> str | None:
        response = self._client.get_item(TableName=self._table(), Key=item_key(handle_key(handle)),
                                         ConsistentRead=True)
        user_id = from_item(response.get("Item") or {}).get("user_id")
        return str(user_id) if user_id else None


def build_effects(env: Mapping[str, str], table: Callable[[], str], client: Any) -> Notify:
    """The projection's `effects` factory (escore.projection.EffectsFactory): its notifier from `env`."""
    return Notify(notifier_from_env(env), table, client)
