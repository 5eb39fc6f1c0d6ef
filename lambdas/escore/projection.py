"""What a projection is: a read model's pure folds (`ProjectionSpec`), and the replay flag they may read.

A projection is, per event type, a pure fold `(stream state, event) -> (new state, writes)`; the
writes are escore.writes' (`put`, `update`, `delete` on owned items, `count` on shared ones). The
live engine (escore.engine, behind the Lambda adapter escore.projector_lambda) passes an empty
state: events carry what their folds need (e.g. `PostDeleted` its author). `InMemoryProjection`
(escore.memory_projection) and replay's fold (escore.rebuild) keep per-stream state, so events
written before they carried those facts fold too.

Replay feeds old events again, flagged in their metadata (`mark_replayed`): a fold with side
effects (a notification, say) asks `is_replayed` and skips them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from escore.engine import position_of
from escore.envelope import Envelope
from escore.memory_projection import InMemoryProjection
from escore.readmodel import from_item, read_count
from escore.writes import Write, count, delete, put, update

# Re-exported from where they live, for the modules that import them from here: the write
# constructors (the projectors), from_item and read_count (the read models), position_of
# (eventstack/dlq.py), InMemoryProjection (bench/replay.py).
__all__ = [
    "REPLAYED", "Fold", "InMemoryProjection", "ProjectionSpec", "StreamState", "Write", "count", "delete",
    "from_item", "is_replayed", "mark_replayed", "position_of", "put", "read_count", "update",
]

StreamState = dict[str, Any]
Fold = Callable[[StreamState, Envelope], tuple[StreamState, list[Write]]]

REPLAYED = "replayed"  # the metadata flag of an event fed by replay


@dataclass(frozen=True)
class ProjectionSpec:
    """A read model: per event type, a pure fold of the event into writes.

    Types not in `folds` are skipped (readers skip types they do not know).
    """

    name: str
    folds: Mapping[str, Fold]


def is_replayed(event: Envelope) -> bool:
    """True for an event fed by replay: notification-like folds skip their side effects for it."""
    return event.metadata.get(REPLAYED) is True


def mark_replayed(event: Envelope) -> Envelope:
    """The event flagged as replayed (the archive reader sets the flag while decoding, for speed)."""
    return event.with_changes(metadata={**event.metadata, REPLAYED: True})
