"""Rebuilding a projection table: fold the history in memory, then write each item once.

Replay (`eventstack replay`) does not feed history through `Projector` batch by batch. It folds
every event of its streams in memory, with per-stream state (as `InMemoryProjection` does, so an
event written before it carried the facts its fold needs is folded from its stream's earlier
events), and then writes each item once (docs/replay.md):

- an **owned** item (written by one stream): its final attributes, the version of its stream's last
  write to it (`_v`), tombstoned or not, and whether the run had a `put`. Written with PutItem (a
  run with a put, a tombstone) or UpdateItem SET of the owned attributes and `_v` (so a shared
  counter on the same item, e.g. a profile's `post_count`, is kept), on the condition
  `attribute_not_exists(_v) OR _v < :v`: a write already done, or overtaken by a newer version,
  changes nothing.
- a **shared** item (`count`, many streams): the sum of its ADDs and its SET attributes, written
  with UpdateItem on the condition `attribute_not_exists(_w#<namespace>)`, setting that watermark
  (the rebuild's own namespace, e.g. `replay:0/4`) and every `marks` attribute (`_w#<stream>:<shard>`
  = the position replay folded that shard to), so the live projector, and replay's tail after the
  cut, apply to the item only what comes after. A worker run again (resume) writes nothing twice.
  Given the stream positions of the events folded (`origins`), the item also gets, per shard, the
  tags of the last `RECENT_EVENTS` events it took from it (`_r#<stream>:<shard>`, as the live
  projector keeps them), so a re-sent copy of one of them just after the cut is recognised too.

Both requests are built by escore.item_writes, as the live engine's are (the owned one with the
item's last version as its bound, the shared one with the rebuild's own watermarks).

`TableFold.apply` takes each stream's events in version order; an event at or below the version
already folded for its stream is a duplicate (the archive and the stream overlap) and is skipped.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from escore.engine import RECENT_EVENTS, Delivery, event_tag, position_of
from escore.envelope import Envelope
from escore.item_writes import Expression, count_update, owned_request
from escore.projection import ProjectionSpec, StreamState
from escore.upcasting import UpcasterRegistry
from escore.writes import RECENT_PREFIX, WATERMARK_PREFIX, Key, Write

log = logging.getLogger(__name__)

REBUILD_POSITION = position_of(1)  # the value of a rebuild namespace's watermark: it is only ever tested for existence
_RETRYABLE = {"ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
              "InternalServerError", "ServiceUnavailable", "TransactionConflictException"}


@dataclass(slots=True)
class OwnedItem:
    write: Write  # the stream's writes to the item coalesced (`Write.then`): put, update or delete
    version: int  # of the stream's last write to it
    stream_id: str


@dataclass
class FoldStats:
    folded: int = 0  # events with at least one write
    skipped: int = 0  # events with none (types the projection does not read, no-op events)
    duplicates: int = 0  # at or below the version already folded for their stream
    failed: int = 0  # events that could not be folded, and the later events of their streams
    failures: list[str] = field(default_factory=list)  # the first few, as lines
    gaps: list[str] = field(default_factory=list)  # streams with a missing version (nothing after it folded)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.gaps)

    def problems(self) -> list[str]:
        return [f"{len(self.gaps)} stream(s) with a missing version: {'; '.join(self.gaps[:5])}"] if self.gaps else []


class TableFold:
    """A projection folded in memory, kept as the items to write (see the module's docstring).

    `require_start`: a stream's first event must be version 1 (false for a `--since` window, whose
    streams may begin earlier). `origins`: event id -> (namespace, position) of the events that came
    from a stream; a shared item keeps the last `RECENT_EVENTS` of them per namespace (`recent`).
    Not thread-safe.
    """

    def __init__(self, spec: ProjectionSpec, *, upcaster: UpcasterRegistry | None = None,
                 require_start: bool = True, origins: Mapping[str, tuple[str, str]] | None = None) -> None:
        self.spec = spec
        self.upcaster = upcaster or spec.registry
        self.require_start = require_start
        self.origins = origins
        self.owned: dict[Key, OwnedItem] = {}
        # A shared item's writes coalesce as `Write.then` would (SETs: the last; ADDs: summed), kept
        # as two mutable maps rather than a new Write per event (`shared` makes the Writes).
        self._shared_set: dict[Key, dict[str, Any]] = {}
        self._shared_add: dict[Key, dict[str, int]] = {}
        self.recent: dict[Key, dict[str, list[tuple[str, str]]]] = {}  # key -> namespace -> heap of (position, tag)
        self.versions: dict[str, int] = {}
        self.states: dict[str, StreamState] = {}
        self.broken: set[str] = set()  # streams not folded past a failure or a gap
        self.stats = FoldStats()

    @property
    def shared(self) -> dict[Key, Write]:
        """The shared items folded so far: one `count` Write each (its summed ADDs, its last SETs)."""
        adds = self._shared_add
        return {key: Write(key, "count", dict(sets), dict(adds[key])) for key, sets in self._shared_set.items()}

    def apply(self, events: Iterable[Envelope]) -> TableFold:
        decode, versions, states, stats = self.spec.decode, self.versions, self.states, self.stats
        upcaster, broken, keep = self.upcaster, self.broken, self._keep
        for event in events:
            stream_id, version = event.stream_id, event.version
            last = versions.get(stream_id)
            if last is not None and version <= last:
                stats.duplicates += 1
                continue
            if stream_id in broken:
                stats.failed += 1
                continue
            expected = (last + 1) if last is not None else (1 if self.require_start else version)
            if version != expected:
                broken.add(stream_id)
                stats.gaps.append(f"{stream_id}: version {expected} missing (next is {version})")
                continue
            try:
                decoded = decode(event, upcaster)
                if decoded is None:
                    writes: list[Write] = []
                else:
                    states[stream_id], writes = decoded.fold(states.get(stream_id, {}), decoded.event, decoded.envelope)
                    if writes:
                        keep(stream_id, version, writes, decoded.envelope)
            except Exception as exc:
                self.broken.add(stream_id)
                stats.failed += 1
                if len(stats.failures) < 10:
                    stats.failures.append(f"{stream_id} v{version}: projection {self.spec.name} cannot apply it: {exc!r}")
                continue
            versions[stream_id] = version
            if writes:
                stats.folded += 1
            else:
                stats.skipped += 1
        return self

    def apply_stream(self, stream_id: str, events: Iterable[Envelope]) -> TableFold:
        """`apply` of events that are all of `stream_id` (replay's reader hands a stream at a time):
        the same checks, stats and items, with the stream's version and state held in locals and
        `ProjectionSpec.decode` inlined (`spec.decoders`: the class's cached constructor, then the fold)."""
        if type(self.spec).decode is not ProjectionSpec.decode:  # (a spec that decodes its own way)
            return self.apply(events)
        stats, broken, keep, decoders = self.stats, self.broken, self._keep, self.spec.decoders
        upcast, require_start = self.upcaster.upcast, self.require_start
        last = self.versions.get(stream_id)
        state = self.states.get(stream_id)
        stopped = stream_id in broken
        folded = skipped = 0
        try:
            for event in events:
                version = event.version
                if last is not None and version <= last:
                    stats.duplicates += 1
                    continue
                if stopped:
                    stats.failed += 1
                    continue
                expected = (last + 1) if last is not None else (1 if require_start else version)
                if version != expected:
                    broken.add(stream_id)
                    stopped = True
                    stats.gaps.append(f"{stream_id}: version {expected} missing (next is {version})")
                    continue
                found = decoders.get(event.type)
                if found is None:
                    last = version
                    skipped += 1
                    continue
                try:
                    construct, fold = found
                    current = upcast(event)
                    state, writes = fold(state if state is not None else {}, construct(current.data), current)
                    if writes:
                        keep(stream_id, version, writes, current)
                except Exception as exc:
                    broken.add(stream_id)
                    stopped = True
                    stats.failed += 1
                    if len(stats.failures) < 10:
                        stats.failures.append(f"{stream_id} v{version}: projection {self.spec.name} cannot apply it: {exc!r}")
                    continue
                last = version
                if writes:
                    folded += 1
                else:
                    skipped += 1
        finally:
            stats.folded += folded
            stats.skipped += skipped
            if last is not None:
                self.versions[stream_id] = last
            if state is not None:
                self.states[stream_id] = state
        return self

    def forget(self, stream_ids: Iterable[str]) -> None:
        """Drop the state of streams folded to their end (their owned items stay until written)."""
        for stream_id in stream_ids:
            self.states.pop(stream_id, None)

    def take_owned(self) -> dict[Key, OwnedItem]:
        """The owned items folded so far, handed over (to be written) and forgotten here."""
        owned, self.owned = self.owned, {}
        return owned

    @staticmethod
    def _check(writes: list[Write]) -> None:
        for write in writes:
            if not isinstance(write, Write):
                raise TypeError(f"a fold returned {type(write).__name__}, not a Write")
            if write.key[0].startswith("$"):
                raise ValueError(f"projection key {write.key} is reserved")

    def recent_of(self, key: Key) -> dict[str, str]:
        """The `_r#<namespace>` values of a shared item: its last events' tags, the newest first."""
        return {namespace: " ".join(tag for _, tag in sorted(heap, reverse=True))
                for namespace, heap in self.recent.get(key, {}).items()}

    def _keep(self, stream_id: str, version: int, writes: list[Write], event: Envelope) -> None:
        owned, shared_set, shared_add = self.owned, self._shared_set, self._shared_add
        for write in writes:  # checked first: an event's writes are kept all or none
            if type(write) is not Write:
                self._check([write])  # (raises)
            key = write.key
            if key[0].startswith("$"):
                raise ValueError(f"projection key {key} is reserved")
            if write.op != "count":
                held = owned.get(key)
                if held is not None and held.stream_id != stream_id:
                    raise ValueError(f"an owned item {key} is written by two streams ({held.stream_id}, "
                                     f"{stream_id}): a projection writes a shared item with count")
        origin = self.origins.get(event.event_id) if self.origins else None
        for write in writes:
            if write.op == "count":
                key = write.key
                sets = shared_set.get(key)
                if sets is None:
                    shared_set[key], shared_add[key] = dict(write.set), dict(write.add)
                else:
                    if write.set:
                        sets.update(write.set)
                    adds = shared_add[key]
                    for name, amount in write.add.items():
                        adds[name] = adds.get(name, 0) + amount
                if origin is not None:
                    namespace, position = origin
                    heap = self.recent.setdefault(write.key, {}).setdefault(namespace, [])
                    entry = (position, event_tag(Delivery(event, namespace, position)))
                    if entry not in heap:  # (two writes of one event to one item)
                        heapq.heappush(heap, entry)
                        if len(heap) > RECENT_EVENTS:
                            heapq.heappop(heap)
            else:
                held = owned.get(write.key)
                if held is None:
                    owned[write.key] = OwnedItem(write, version, stream_id)
                else:
                    held.write, held.version = held.write.then(write), version


# --- writing --------------------------------------------------------------------------------


@dataclass
class WriteStats:
    written: int = 0  # requests that changed the item
    already: int = 0  # requests whose condition found the write done (or overtaken)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, done: bool) -> None:
        with self.lock:
            if done:
                self.written += 1
            else:
                self.already += 1


def rebuilt_owned_request(table: str, key: Key, item: OwnedItem, now: float) -> tuple[str, dict[str, Any]]:
    """The one conditional request that writes an owned item's final state: ("put_item" | "update_item", kwargs)."""
    return owned_request(table, key, item.write, version=item.version, below=item.version, may_create=True, now=now)


def rebuilt_shared_request(table: str, key: Key, write: Write, namespace: str, marks: Mapping[str, str],
                           recent: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The UpdateItem of a shared item: its ADDs and SETs, its rebuild watermark, the live marks and
    (`recent`: namespace -> tags) the recent events per live namespace."""
    x = Expression()
    mark = x.name(WATERMARK_PREFIX + namespace)
    sets = [f"{mark} = {x.value({'S': REBUILD_POSITION})}"]
    sets += [f"{x.name(name)} = {x.value({'S': position})}" for name, position in sorted(marks.items())]
    sets += [f"{x.name(RECENT_PREFIX + live)} = {x.value({'S': tags})}" for live, tags in sorted((recent or {}).items())]
    return count_update(table, key, write, x, condition=f"attribute_not_exists({mark})", sets=sets)


def live_marks(cuts: Mapping[str, str]) -> dict[str, str]:
    """`marks` for `write_fold`: namespace -> cut position, as watermark attributes."""
    return {WATERMARK_PREFIX + namespace: position for namespace, position in cuts.items()}


def write_fold(
    fold: TableFold,
    client: Any,
    table: str,
    namespace: str,
    marks: Mapping[str, str],
    *,
    owned: Mapping[Key, OwnedItem] | None = None,
    shared: bool = True,
    workers: int = 4,
    clock: Callable[[], float] = time.time,
    stats: WriteStats | None = None,
) -> WriteStats:
    """Write the fold's items into `table`, each with one conditional request (see the module's docstring).

    `owned` (default: `fold.take_owned()`) and, with `shared`, the fold's shared items. `marks` maps
    watermark attributes (`_w#<namespace>`, see `live_marks`) to the positions the fold covers. Writes
    run on `workers` threads; the first error that is not a throttle stops the writing and is raised
    (a writer run again writes nothing twice). Counts go to `stats` (a new one by default), as they happen.
    """
    if not namespace or namespace.startswith(("$", "_")):
        raise ValueError(f"bad rebuild namespace {namespace!r}")
    items = fold.take_owned() if owned is None else owned
    now = clock()
    requests: list[tuple[str, dict[str, Any]]] = [rebuilt_owned_request(table, key, item, now)
                                                  for key, item in items.items()]
    if shared:
        requests += [("update_item", rebuilt_shared_request(table, key, write, namespace, marks, fold.recent_of(key)))
                     for key, write in fold.shared.items()]
    stats = stats if stats is not None else WriteStats()

    def send(request: tuple[str, dict[str, Any]]) -> None:
        method, kwargs = request
        for attempt in range(1, 9):
            try:
                getattr(client, method)(**kwargs)
            except Exception as exc:
                code = _code(exc)
                if code == "ConditionalCheckFailedException":
                    stats.add(False)
                    break
                if code in _RETRYABLE and attempt < 8:
                    time.sleep(min(0.05 * 2**attempt, 2.0) * (0.5 + random.random()))
                    continue
                raise
            stats.add(True)
            break

    if workers <= 1 or len(requests) <= 1:
        for request in requests:
            send(request)
        return stats
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rebuild") as pool:
        futures = [pool.submit(send, request) for request in requests]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        for future in done:
            error = future.exception()
            if error is not None:
                raise error
    return stats


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
