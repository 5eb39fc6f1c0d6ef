"""The projection engine (`Projector`): applies events to a DynamoDB read model exactly once in effect.

Delivery is at least once (Kinesis re-delivers a batch after a failure or a crash; replays and
hand-offs overlap the live stream). The engine keeps no checkpoint items and uses no transactions:
every read-model item is its own checkpoint, and every item is written with one conditional
request per batch (docs/decisions.md, "Exactly-once without checkpoints"):

- **Owned items** (`put`, `update`, `delete`: one stream writes them, state from the event alone)
  carry `_v`, the version of their stream last applied. A write is conditioned on `_v` being below
  the first version it carries, so a duplicate, or an older event after a newer one, is a no-op,
  whatever path delivered it. An update of an item its stream has not created yet (`_v` absent)
  is ahead of a missing predecessor: it fails, and is delivered again later.
- **Shared items** (`count`: ADD from many streams, which commutes) carry a watermark per source
  namespace (`_w#<namespace>`: a Kinesis shard, or a replay worker): the highest position of that
  namespace applied to the item. A write carries every delivery of its namespace for the item, in
  position order, and is conditioned on the watermark being below the first. That is exact
  because (a) a namespace is read in order by one reader at a time, (b) the engine never writes
  past a delivery it failed (a batch is cut at its first failed delivery, per namespace, so every
  item's watermark stays below it and the re-delivery starts there), and (c) the same event does
  not appear at two positions of one namespace: the publisher relays exactly once, and the item
  keeps the tags of the last RECENT_EVENTS events it took from the namespace (`_r#<namespace>`), so
  a re-sent copy that comes within that many events of its original is dropped as well.

A condition that fails returns the old item (no extra read): its `_v` or watermark says which of
the carried events are already applied; the rest are written again. Writes to one item inside a
batch are coalesced first (`Write.then`): a hundred posts of one author are one `ADD post_count :100`.

The engine folds each event with its projection's folds (escore.projection) from an empty state:
events carry what their folds need (e.g. `PostDeleted` its author). Each item's request is built
by escore.item_writes; the Kinesis adapter is escore.projector_lambda.

**Effects** (a projector made with `effects`, e.g. a notification): after the batch's writes, the
writes this call applied for the first time (`Applied`) of events that are not replayed are handed
to `effects`, once. The write is the marker: a re-delivery finds it applied (a duplicate) and hands
nothing, so an effect runs at most once per write (a crash between the write and the effect loses
it, never repeats it). Only then do the requests also return the old item (`ReturnValues`, no
extra capacity), which says whether the write created its item; without effects nothing changes.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from escore.attributes import to_attr
from escore.envelope import Envelope
from escore.item_writes import item_key, owned_request, shared_request
from escore.upcasting import SchemaTooNew, UpcasterRegistry
from escore.writes import DELETED_ATTRIBUTE, RECENT_PREFIX, VERSION_ATTRIBUTE, WATERMARK_PREFIX, Key, Write

if TYPE_CHECKING:
    from escore.projection import ProjectionSpec

log = logging.getLogger(__name__)

RECENT_EVENTS = 24  # per shared item and namespace: the last events applied (their 64-bit tags)
RECENT_ITEMS_CACHED = 20_000  # items whose recent events this process remembers
POSITION_WIDTH = 64  # Kinesis sequence numbers have up to 56 digits; zero-padded they sort as strings
WRITE_ATTEMPTS = 4
_RETRYABLE_CODES = {"ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
                    "InternalServerError", "TransactionConflictException", "ServiceUnavailable"}


def position_of(sequence: str | int) -> str:
    """A position comparable as a string: a Kinesis sequence number (or any counter), zero-padded."""
    text = str(sequence)
    if not text.isdigit() or len(text) > POSITION_WIDTH:
        raise ValueError(f"a position is a non-negative integer of at most {POSITION_WIDTH} digits, got {text!r}")
    return text.zfill(POSITION_WIDTH)


# --- deliveries and results ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event as one source delivered it: `namespace` (e.g. `posts:shardId-000000000000`) is read
    in order by one reader at a time, and `position` (see `position_of`) orders it there."""

    event: Envelope
    namespace: str
    position: str


@dataclass(frozen=True, slots=True)
class Failure:
    event_id: str
    stream_id: str
    version: int
    reason: str
    # The event itself cannot be applied by this code (its fold raised, its schema is too new): no
    # retry helps. Otherwise (a missing predecessor, a failed write, behind one of those) a later
    # delivery may succeed.
    poison: bool = False


@dataclass
class ApplyResult:
    applied: int = 0  # deliveries whose writes were committed by this call
    skipped: int = 0  # deliveries with nothing to write (types the projection does not fold, no-op events)
    duplicates: int = 0  # deliveries whose every write was applied before (or given twice in this call)
    failed: list[Failure] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Applied:
    """A write this call applied for the first time, with the (live) event that carried it.

    `created`: the item did not exist for readers before (absent, or a tombstone): the first event
    of a coalesced run that created it; False for the rest of the run and for an item that existed."""

    event: Envelope
    write: Write
    created: bool


Effects = Callable[[Sequence[Applied]], None]


# --- the engine ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    """Writes to one item from one batch: owned (by version) or shared (by one namespace's positions)."""

    key: Key
    shared: bool
    namespace: str
    entries: list[tuple[Delivery, Write]] = field(default_factory=list)
    written: list[tuple[Delivery, Write]] = field(default_factory=list)  # what this call's write carried
    tags: tuple[str, ...] = ()  # a shared item's recent events as this call left them
    created: bool = False  # this call's write created the item (known only when effects ask)

    def order(self, delivery: Delivery) -> Any:
        return delivery.position if self.shared else delivery.event.version


class Projector:
    """Applies deliveries to one projection table. Thread-compatible, not thread-safe."""

    def __init__(
        self,
        spec: ProjectionSpec,
        table: str | Callable[[], str],
        client: Any,
        *,
        upcaster: UpcasterRegistry | None = None,
        max_attempts: int = WRITE_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        effects: Effects | None = None,
    ) -> None:
        self.spec = spec
        # A callable resolves the active table (escore.tables.TableResolver) once per `apply`.
        self._table = table
        self.table_name = table if isinstance(table, str) else table()
        self._client = client
        self._upcaster = upcaster or spec.registry  # default: the folded classes' contracts
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._clock = clock
        self._effects = effects
        # (shared item, namespace) -> the recent events this process last wrote to it (escore.writes)
        self._recent: OrderedDict[tuple[Key, str], tuple[str, ...]] = OrderedDict()

    def apply(self, deliveries: Sequence[Delivery]) -> ApplyResult:
        """Apply a batch (any mix of namespaces, duplicates allowed); report what was done.

        Nothing raises for a bad event: it is in `failed`, with every later delivery of its namespace.
        """
        result = ApplyResult()
        if not isinstance(self._table, str):
            self.table_name = self._table()
        failed: dict[str, tuple[str, str]] = {}  # event_id -> (namespace, reason)
        poisoned: set[str] = set()
        cut: dict[str, str] = {}  # namespace -> position of its first failed delivery
        writes_of: dict[str, list[Write]] = {}
        order: list[Delivery] = []
        seen: set[str] = set()
        for delivery in sorted(deliveries, key=lambda d: (d.namespace, d.position)):
            event = delivery.event
            if event.event_id in seen:
                result.duplicates += 1
                continue
            seen.add(event.event_id)
            order.append(delivery)
            if delivery.namespace in cut:
                continue
            try:
                writes_of[event.event_id] = self._fold(event)
            except SchemaTooNew as exc:
                self._cut(cut, failed, delivery, f"schema too new: {exc}")
                poisoned.add(event.event_id)
            except Exception as exc:
                self._cut(cut, failed, delivery, f"projection {self.spec.name} cannot apply it: {exc!r}")
                poisoned.add(event.event_id)

        items = self._plan(order, writes_of, cut, failed, owned=True)
        for item in items:
            self._write(item, cut, failed)
        outcome: dict[str, set[str]] = {}  # event_id -> outcomes of its items ("applied", "duplicate")
        for item in items:
            self._collect(item, outcome)
        shared = self._plan(order, writes_of, cut, failed, owned=False)
        for item in shared:
            self._write(item, cut, failed)
        for item in shared:
            self._compensate(item, cut)
            self._collect(item, outcome)

        for delivery in order:
            event = delivery.event
            namespace_cut = cut.get(delivery.namespace)
            if event.event_id in failed:
                reason = failed[event.event_id][1]
            elif namespace_cut is not None and delivery.position >= namespace_cut:
                reason = f"behind a failed delivery of {delivery.namespace}"
            else:
                reason = ""
            if reason:
                result.failed.append(Failure(event.event_id, event.stream_id, event.version, reason,
                                             poison=event.event_id in poisoned))
            elif not writes_of.get(event.event_id):
                result.skipped += 1
            elif outcome.get(event.event_id) == {"duplicate"}:
                result.duplicates += 1
            else:
                result.applied += 1
        if self._effects is not None:
            self._run_effects([*items, *shared])
        return result

    def _run_effects(self, items: Sequence[_Item]) -> None:
        """Hand the writes this call applied (of live events) to the effects; never raise."""
        from escore.projection import is_replayed  # it imports this module

        applied = [Applied(d.event, w, item.created and n == 0) for item in items
                   for n, (d, w) in enumerate(item.written) if not is_replayed(d.event)]
        if not applied:
            return
        try:
            self._effects(applied)  # type: ignore[misc]
        except Exception as exc:  # at most once: the writes are the marker, no retry re-runs them
            log.error("projection %s: effects of %d writes failed: %r", self.spec.name, len(applied), exc)

    # planning -------------------------------------------------------------------------------

    def _fold(self, event: Envelope) -> list[Write]:
        decoded = self.spec.decode(event, self._upcaster)
        if decoded is None:
            return []
        _, writes = decoded.apply({})
        for write in writes:
            if not isinstance(write, Write):
                raise TypeError(f"a fold returned {type(write).__name__}, not a Write")
            if write.key[0].startswith("$"):
                raise ValueError(f"projection key {write.key} is reserved")
        return writes

    def _plan(self, order: Sequence[Delivery], writes_of: Mapping[str, list[Write]], cut: dict[str, str],
              failed: dict[str, tuple[str, str]], *, owned: bool) -> list[_Item]:
        """The items to write, each with its deliveries in order (those before their namespace's cut)."""
        items: dict[tuple[Key, str], _Item] = {}
        owner: dict[Key, str] = {}
        for delivery in order:
            event = delivery.event
            if not _open(delivery, cut, failed):
                continue
            mine = [w for w in writes_of.get(event.event_id, ()) if w.shared != owned]
            if owned and any(owner.setdefault(w.key, event.stream_id) != event.stream_id for w in mine):
                self._cut(cut, failed, delivery, "an owned item is written by two streams: "
                                                 "a projection writes a shared item with count")
                continue
            for write in mine:
                slot = (write.key, "" if owned else delivery.namespace)
                item = items.get(slot)
                if item is None:
                    item = items[slot] = _Item(write.key, not owned, delivery.namespace)
                item.entries.append((delivery, write))
        for item in items.values():
            item.entries.sort(key=lambda entry, item=item: item.order(entry[0]))  # type: ignore[misc]
        return list(items.values())

    @staticmethod
    def _cut(cut: dict[str, str], failed: dict[str, tuple[str, str]], delivery: Delivery, reason: str) -> None:
        failed[delivery.event.event_id] = (delivery.namespace, reason)
        if delivery.namespace not in cut or delivery.position < cut[delivery.namespace]:
            cut[delivery.namespace] = delivery.position

    # writing --------------------------------------------------------------------------------

    def _write(self, item: _Item, cut: dict[str, str], failed: dict[str, tuple[str, str]]) -> None:
        """Write one item; entries already applied are marked duplicates; a failure cuts their namespace."""
        # A failure found since planning may have cut a namespace: nothing at or past a cut is written.
        item.entries = [e for e in item.entries if _open(e[0], cut, failed)]
        slot = (item.key, item.namespace)
        recent = self._recent.get(slot) if item.shared else None  # None: not known in this process
        pending = [e for e in item.entries if recent is None or event_tag(e[0]) not in recent]
        done: list[tuple[Delivery, Write]] = []
        for attempt in range(1, self._max_attempts + 1):
            if not pending:
                break
            try:
                old, written, written_new = self._request(item, pending, recent)
            except Exception as exc:
                code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
                if code in _RETRYABLE_CODES and attempt < self._max_attempts:
                    self._sleep(min(0.05 * 2**attempt, 1.0) * (0.5 + random.random()))
                    continue
                log.warning("projection %s: writing %s failed: %r", self.spec.name, item.key, exc)
                for delivery, _ in pending:
                    self._cut(cut, failed, delivery, f"write failed: {exc}")
                return
            if old is None:  # written
                done.extend(pending)
                item.written = list(pending)
                item.created = written_new
                if item.shared:
                    item.tags = written
                    self._remember(slot, written)
                break
            mark = old.get(WATERMARK_PREFIX + item.namespace if item.shared else VERSION_ATTRIBUTE)
            if item.shared:  # the item as it is: its watermark and its recent events say what is applied
                recent = tuple(str(old.get(RECENT_PREFIX + item.namespace, {}).get("S", "")).split())
                applied = str(mark["S"]) if mark is not None else ""
                pending = [e for e in pending if e[0].position > applied and event_tag(e[0]) not in recent]
                continue
            if mark is None:
                if pending[0][1].may_create:
                    continue  # the item changed between our write and its answer: try again
                for delivery, _ in pending:
                    self._cut(cut, failed, delivery, f"ahead of a missing predecessor: {item.key} has not "
                                                     f"been created by {delivery.event.stream_id} yet")
                return
            version = int(mark["N"])
            pending = [e for e in pending if e[0].event.version > version]
        else:
            if pending:
                for delivery, _ in pending:
                    self._cut(cut, failed, delivery, f"gave up writing {item.key} after {self._max_attempts} attempts")
                return
        item.entries = [(d, w) for d, w in item.entries if (d, w) in done] + [
            (d, _DUPLICATE) for d, w in item.entries if (d, w) not in done]

    def _compensate(self, item: _Item, cut: Mapping[str, str]) -> None:
        """Take back what a shared item took past its namespace's cut (a write of another item failed
        after this one was written), so that nothing at or past the delivery Lambda re-delivers from
        is applied anywhere: then a batch dead-lettered after its retries holds only unapplied events."""
        limit = cut.get(item.namespace)
        if not item.shared or limit is None or not item.written:
            return
        past = [(d, w) for d, w in item.written if d.position >= limit]
        if not past or not limit.isdigit() or not item.written[0][0].position.isdigit():
            return
        kept = [(d, w) for d, w in item.written if d.position < limit]
        undo: dict[str, int] = {}
        for _, write in past:
            for name, amount in write.add.items():
                undo[name] = undo.get(name, 0) - amount
        back = {event_tag(d) for d, _ in past}
        tags = tuple(t for t in item.tags if t not in back)
        # The watermark goes back to the last delivery kept, or to just below the first this write
        # carried (its condition said the item held less than that, so nothing below is missing).
        first = item.written[0][0].position
        below = kept[-1][0].position if kept else position_of(max(int(first) - 1, 0))
        names = {"#w": WATERMARK_PREFIX + item.namespace, "#r": RECENT_PREFIX + item.namespace}
        values: dict[str, Any] = {":hi": {"S": item.written[-1][0].position}, ":below": {"S": below},
                                  ":tags": {"S": " ".join(tags)}}
        adds = []
        for n, (name, amount) in enumerate(undo.items()):
            names[f"#c{n}"], values[f":c{n}"] = name, to_attr(amount)
            adds.append(f"#c{n} :c{n}")
        # Forget the recent events first: if this process dies once the write lands, what it last
        # wrote is no longer the item's, and must not be used to drop a re-delivered event.
        self._recent.pop((item.key, item.namespace), None)
        try:
            self._client.update_item(
                TableName=self.table_name, Key=item_key(item.key),
                UpdateExpression="SET #w = :below, #r = :tags" + (f" ADD {', '.join(adds)}" if adds else ""),
                ConditionExpression="#w = :hi", ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except Exception as exc:  # the deliveries past the cut stay applied: their re-delivery skips them
            log.error("projection %s: could not take back %d deliveries from %s past the cut of %s: %r",
                      self.spec.name, len(past), item.key, item.namespace, exc)
            return
        item.entries = [(d, w) for d, w in item.entries if d.position < limit]
        item.written = kept

    def _remember(self, slot: tuple[Key, str], recent: tuple[str, ...]) -> None:
        cache = self._recent
        cache[slot] = recent
        cache.move_to_end(slot)
        while len(cache) > RECENT_ITEMS_CACHED:
            cache.popitem(last=False)

    def _collect(self, item: _Item, outcome: dict[str, set[str]]) -> None:
        for delivery, write in item.entries:
            outcome.setdefault(delivery.event.event_id, set()).add("duplicate" if write is _DUPLICATE else "applied")

    def _request(self, item: _Item, entries: list[tuple[Delivery, Write]], recent: tuple[str, ...] | None
                 ) -> tuple[dict[str, Any] | None, tuple[str, ...], bool]:
        """One conditional request for `entries` (coalesced): (None, the shared item's new recent
        events, whether it created the item: asked only with effects) if written, else (the old item, (), False)."""
        merged = entries[0][1]
        for _, write in entries[1:]:
            merged = merged.then(write)
        first, last = entries[0][0], entries[-1][0]
        written: tuple[str, ...] = ()
        if item.shared:
            written = tuple(event_tag(d) for d, _ in reversed(entries))[:RECENT_EVENTS] + (recent or ())
            written = written[:RECENT_EVENTS]
            request = shared_request(self.table_name, item.key, merged, item.namespace, first=first.position,
                                     last=last.position, recent=recent or (), written=written)
            method = self._client.update_item
        else:
            name, request = owned_request(self.table_name, item.key, merged, version=last.event.version,
                                          below=first.event.version, may_create=entries[0][1].may_create,
                                          now=self._clock())
            method = getattr(self._client, name)
        request["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        if self._effects is not None:
            request["ReturnValues"] = "ALL_OLD"
        try:
            response = method(**request)
        except Exception as exc:
            response = getattr(exc, "response", None)
            if isinstance(response, dict) and response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                old: dict[str, Any] = response.get("Item") or {}
                return old, (), False
            raise
        before = (response or {}).get("Attributes") if self._effects is not None else None
        return None, written, not before or DELETED_ATTRIBUTE in before


_DUPLICATE = Write(("", ""), "update")  # marks an entry found already applied


def event_tag(delivery: Delivery) -> str:
    """A short, collision-resistant id of the event (64 bits), for a shared item's recent events."""
    return hashlib.blake2b(delivery.event.event_id.encode(), digest_size=8).hexdigest()


def _open(delivery: Delivery, cut: Mapping[str, str], failed: Mapping[str, tuple[str, str]]) -> bool:
    """Not failed, and before its namespace's first failed delivery."""
    limit = cut.get(delivery.namespace)
    return delivery.event.event_id not in failed and (limit is None or delivery.position < limit)
