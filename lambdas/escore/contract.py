"""A service's event contract: the events it publishes, each with its schema version and the
upcast steps that raise an older schema to it, side by side.

A producer declares its contract once (`lambdas/<service>/contract.py`, `EVENTS =
EventContract(service, (EventA, EventB, ...))`); its aggregate writes those classes, and every
consumer depends on that module alone: a projection keys its folds by the classes it reads, and
the engine decodes each event into its class, upcast to the current schema. The topology names
each service's contract (`Service.contract`), so the CLI's readers (archive, replay) find them
without importing anything else of the service.

    @dataclass(frozen=True, kw_only=True)
    class PostCreated(DomainEvent):
        type = "PostCreated"
        schema_version = 2
        upcasts = steps(add_tags)  # the step from schema 1 (to 2); steps(a, b): 1 -> 2 -> 3
        post_id: str
        ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from escore.aggregate import DomainEvent
from escore.envelope import Envelope
from escore.upcasting import SchemaTooNew, Step, UpcasterRegistry

__all__ = ["EventContract", "SchemaTooNew", "registry_of", "registry_of_events", "steps"]


def steps(*from_one: Step) -> Mapping[int, Step]:
    """An event class's `upcasts`: the first step raises schema 1 to 2, the next 2 to 3, and so on."""
    return MappingProxyType(dict(enumerate(from_one, start=1)))


class EventContract:
    def __init__(self, service: str, events: Sequence[type[DomainEvent]]) -> None:
        self.service = service
        self.events = tuple(events)
        self.classes: dict[str, type[DomainEvent]] = {}
        for event_class in self.events:
            if event_class.type in self.classes:
                raise ValueError(f"{service}: two event classes of type {event_class.type}")
            missing = [v for v in range(1, event_class.schema_version) if v not in event_class.upcasts]
            if missing:
                raise ValueError(f"{event_class.type} is at schema {event_class.schema_version}: no step from {missing}")
            self.classes[event_class.type] = event_class
        self.registry = registry_of_events(self.events)

    def current_version(self, event_type: str) -> int:
        event_class = self.classes.get(event_type)
        return event_class.schema_version if event_class is not None else 1

    def decode(self, envelope: Envelope) -> DomainEvent | None:
        """The event as its class, upcast to the current schema; None for a type this contract lacks
        (a reader skips it). SchemaTooNew for an event written by newer code."""
        event_class = self.classes.get(envelope.type)
        if event_class is None:
            return None
        return event_class.from_data(self.registry.upcast(envelope).data)


def registry_of(contracts: Iterable[EventContract]) -> UpcasterRegistry:
    """One registry with every step of `contracts` (what a reader of several streams upcasts with)."""
    return registry_of_events(event_class for contract in contracts for event_class in contract.events)


def registry_of_events(event_classes: Iterable[type[DomainEvent]]) -> UpcasterRegistry:
    registry = UpcasterRegistry()
    for event_class in event_classes:
        for version in range(1, event_class.schema_version):
            registry.register(event_class.type, version)(event_class.upcasts[version])
    return registry
