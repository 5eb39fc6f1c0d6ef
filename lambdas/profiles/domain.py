"""The User aggregate: a profile with a unique handle and a display name.

Pure: commands check the user's state and return events (and, for registration, the claim on
the handle the store must write with them); `apply` folds events into state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from escore.aggregate import Aggregate, AggregateNotFound, DomainEvent, VersionConflict
from escore.store import Claim
from profiles.contract import DisplayNameChanged, UserRegistered

KIND = "user"
HANDLE_CLAIM = "handle"  # the claim's scope; a taken handle answers 409 "handle_taken"


class User(Aggregate):
    stream_prefix = "user"
    event_types = (UserRegistered, DisplayNameChanged)

    def __init__(self, user_id: str) -> None:
        super().__init__(user_id)
        self.handle = ""
        self.display_name = ""

    # commands
    def register(self, handle: str, display_name: str) -> tuple[list[DomainEvent], list[Claim]]:
        """The events, and the handle's claim: unique across users, written in the same append."""
        if self.exists:
            raise VersionConflict(f"user {self.id} already exists", self.version)
        events: list[DomainEvent] = [UserRegistered(user_id=self.id, handle=handle, display_name=display_name)]
        return events, [Claim(HANDLE_CLAIM, handle, owner=self.stream_id)]

    def change_display_name(self, display_name: str, expected_version: int | None) -> list[DomainEvent]:
        self.require_exists()
        self.require_version(expected_version)
        return [DisplayNameChanged(display_name=display_name)]

    def require_exists(self) -> None:
        if not self.exists:
            raise AggregateNotFound(KIND, self.id)

    # state
    def apply(self, event: DomainEvent) -> None:
        match event:
            case UserRegistered(handle=handle, display_name=display_name):
                self.handle = handle
                self.display_name = display_name
            case DisplayNameChanged(display_name=display_name):
                self.display_name = display_name

    def state(self) -> dict[str, Any]:
        return {"handle": self.handle, "display_name": self.display_name}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        self.handle = str(state.get("handle", ""))
        self.display_name = str(state.get("display_name", ""))

    def view(self, post_count: int) -> dict[str, Any]:
        """GET /users/{user_id}: the profile from the events, post_count from the projection."""
        return {
            "user_id": self.id,
            "handle": self.handle,
            "display_name": self.display_name,
            "version": self.version,
            "post_count": post_count,
        }
