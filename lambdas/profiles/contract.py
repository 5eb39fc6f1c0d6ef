"""The profiles service's event contract: its events, their schemas and upcast steps.

What every consumer of the profiles stream depends on, and nothing else of the service: the User
aggregate (`profiles.domain`) writes these classes, and projections fold them (escore.contract).

Schemas (all at 1, no steps yet): `UserRegistered {user_id, handle, display_name}`,
`DisplayNameChanged {display_name}`. A new schema sets `schema_version = 2` on its class and
`upcasts = steps(step)` beside it, the step turning schema-1 data into schema 2.
"""

from __future__ import annotations

from dataclasses import dataclass

from escore.aggregate import DomainEvent
from escore.contract import EventContract


@dataclass(frozen=True)
class UserRegistered(DomainEvent):
    type = "UserRegistered"
    user_id: str
    handle: str
    display_name: str


@dataclass(frozen=True)
class DisplayNameChanged(DomainEvent):
    type = "DisplayNameChanged"
    display_name: str


EVENTS = EventContract("profiles", (UserRegistered, DisplayNameChanged))
