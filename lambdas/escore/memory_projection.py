"""A projection folded in memory (`InMemoryProjection`), with per-stream state: no DynamoDB.

The same folds as the engine's (escore.engine), applied to plain dicts with `escore.writes.apply_write`.
For tests (the expected result of a run), benchmarks and tools.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from escore.envelope import Envelope
from escore.writes import apply_write

if TYPE_CHECKING:
    from escore.projection import ProjectionSpec, StreamState


class InMemoryProjection:
    """A projection folded in memory: the same folds as `Projector`, with per-stream state.

    For tests (the expected result of a run), benchmarks and the replay of events written before
    they carried what their folds need. The caller feeds each stream's events once and in version
    order; `items` is the table (tombstones left out), keyed by (pk, sk).
    """

    def __init__(self, spec: ProjectionSpec) -> None:
        self.spec = spec
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.states: dict[str, StreamState] = {}

    def apply(self, events: Iterable[Envelope]) -> InMemoryProjection:
        decode, items, states = self.spec.decode, self.items, self.states
        for event in events:
            decoded = decode(event)
            if decoded is None:
                continue
            states[event.stream_id], writes = decoded.apply(states.get(event.stream_id, {}))
            for write in writes:
                item = apply_write(items.get(write.key), write)
                if item is None:
                    items.pop(write.key, None)
                else:
                    items[write.key] = item
        return self
