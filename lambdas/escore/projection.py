"""What a projection is: a read model's pure folds (`ProjectionSpec`), and the replay flag they may read.

A projection is, per event class, a pure fold `(stream state, event, envelope) -> (new state,
writes)`: `event` is the decoded event, an instance of its class in the producer's contract
(escore.contract), upcast to the current schema; `envelope` its envelope (stream, version, time,
metadata). The writes are escore.writes' (`put`, `update`, `delete` on owned items, `count` on
shared ones). A type the projection has no fold for is skipped. The live engine (escore.engine, behind the Lambda adapter escore.projector_lambda) passes an empty
state: events carry what their folds need (e.g. `PostDeleted` its author). `InMemoryProjection`
(escore.memory_projection) and replay's fold (escore.rebuild) keep per-stream state, so events
written before they carried those facts fold too.

Replay feeds old events again, flagged in their metadata (`mark_replayed`): a side effect (a
notification, say) must skip them. Folds stay pure; a projection with a side effect declares
`effects`, a factory the projector handler calls once at cold start (its environment, its active
table, its DynamoDB client) for the function the engine runs after each batch's writes, on the
writes applied there for the first time, replayed events left out (escore.engine.Applied).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from escore.aggregate import DomainEvent, constructor_of
from escore.contract import registry_of_events
from escore.engine import Applied, position_of
from escore.envelope import Envelope
from escore.memory_projection import InMemoryProjection
from escore.readmodel import from_item, read_count
from escore.upcasting import UpcasterRegistry
from escore.writes import Write, count, delete, put, update

# Re-exported from where they live, for the modules that import them from here: the write
# constructors (the projectors), from_item and read_count (the read models), position_of
# (eventstack/dlq.py), InMemoryProjection (bench/replay.py).
__all__ = [
    "REPLAYED", "Applied", "Decoded", "EffectsFactory", "Fold", "InMemoryProjection", "ProjectionSpec", "StreamState", "Write", "count", "delete",
    "from_item", "is_replayed", "mark_replayed", "position_of", "put", "read_count", "update",
]

StreamState = dict[str, Any]
Fold = Callable[[StreamState, Any, Envelope], tuple[StreamState, list[Write]]]  # (state, event, envelope)
# (environment, the active table's name now, DynamoDB client) -> what runs on a batch's first-applied writes
EffectsFactory = Callable[[Mapping[str, str], Callable[[], str], Any], Callable[[Sequence[Applied]], None]]

REPLAYED = "replayed"  # the metadata flag of an event fed by replay


class Decoded(NamedTuple):
    """An event a projection folds: decoded into its class, and its envelope at the current schema."""

    event: DomainEvent
    envelope: Envelope
    fold: Fold

    def apply(self, state: StreamState) -> tuple[StreamState, list[Write]]:
        return self.fold(state, self.event, self.envelope)


@dataclass(frozen=True)
class ProjectionSpec:
    """A read model: per event class, a pure fold of the event into writes.

    Types not in `folds` are skipped (readers skip types they do not know). `registry` upcasts
    the folded classes' events (their contracts' steps).
    """

    name: str
    folds: Mapping[type[DomainEvent], Fold]
    effects: EffectsFactory | None = field(default=None, compare=False)
    by_type: Mapping[str, tuple[type[DomainEvent], Fold]] = field(init=False, repr=False, compare=False)
    registry: UpcasterRegistry = field(init=False, repr=False, compare=False)
    # type -> (the class's `from_data`, fold): what `decode` does, for a fold loop to inline (escore.rebuild)
    decoders: Mapping[str, tuple[Callable[[Mapping[str, Any]], DomainEvent], Fold]] = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_type = {event_class.type: (event_class, fold) for event_class, fold in self.folds.items()}
        object.__setattr__(self, "by_type", by_type)
        object.__setattr__(self, "decoders", {name: (constructor_of(event_class), fold)
                                              for name, (event_class, fold) in by_type.items()})
        object.__setattr__(self, "registry", registry_of_events(self.folds))

    def decode(self, envelope: Envelope, upcaster: UpcasterRegistry | None = None) -> Decoded | None:
        """The event to fold, upcast (by `upcaster`, default the contracts' steps); None for a type
        this projection does not fold. SchemaTooNew for an event newer than this code."""
        found = self.by_type.get(envelope.type)
        if found is None:
            return None
        event_class, fold = found
        current = (upcaster or self.registry).upcast(envelope)
        return Decoded(event_class.from_data(current.data), current, fold)


def is_replayed(event: Envelope) -> bool:
    """True for an event fed by replay: notification-like folds skip their side effects for it."""
    return event.metadata.get(REPLAYED) is True


def mark_replayed(event: Envelope) -> Envelope:
    """The event flagged as replayed (the archive reader sets the flag while decoding, for speed)."""
    return event.with_changes(metadata={**event.metadata, REPLAYED: True})
