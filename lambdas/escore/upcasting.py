"""Upcasting: raise an event's `data` from the schema it was written at to the one the code reads.

A registry of per-type steps (`schema_version n -> n+1`), made from event contracts
(escore.contract, where each step is declared beside its event class). It is applied wherever
events are read: the store's `read`, the projectors (Kinesis), and the archive reader (replay).
An event whose schema is newer than the code knows is an error (`SchemaTooNew`), never
silently read with the wrong shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from escore.envelope import Envelope, with_data

Step = Callable[[dict[str, Any]], dict[str, Any]]


class SchemaTooNew(ValueError):
    pass


class UpcasterRegistry:
    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Step] = {}
        self._current: dict[str, int] = {}

    def register(self, event_type: str, from_version: int) -> Callable[[Step], Step]:
        """Decorator: the step that turns `event_type` data at `from_version` into `from_version + 1`."""

        def decorate(step: Step) -> Step:
            self._steps[(event_type, from_version)] = step
            self._current[event_type] = max(self._current.get(event_type, 1), from_version + 1)
            return step

        return decorate

    def current_version(self, event_type: str) -> int:
        return self._current.get(event_type, 1)

    def upcast(self, event: Envelope) -> Envelope:
        event_type = event.type
        written = event.schema_version
        target = self._current.get(event_type, 1)
        if written == target:  # the common case: nothing to do, no copy
            return event
        if written > target:
            raise SchemaTooNew(f"{event_type} at schema {written}; this code reads up to {target}")
        data = event.data
        steps = self._steps
        for version in range(written, target):
            data = steps[(event_type, version)](dict(data))
        return with_data(event, data, target)

