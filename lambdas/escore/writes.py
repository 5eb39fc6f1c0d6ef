"""What a projection's fold returns: changes to read-model items (the write algebra).

Two kinds of item, told apart by the write (docs/decisions.md, "Exactly-once without checkpoints"):

- an **owned** item is written by one source stream only (a post's timeline entry, the profile
  fields a user's own stream sets). Its writes are `put`, `update` and `delete`, and each sets the
  item's state from the event alone (SET, never ADD), so the latest version wins: the item keeps
  `_v`, the version of its stream last applied, and is its own checkpoint. `delete` leaves a
  tombstone, so a late duplicate of an earlier event cannot bring the item back.
- a **shared** item is written by many streams (a user's `post_count`, a tag's count). Its writes
  are `count`: ADD of counters plus SET of attributes every stream sets to the same value. ADDs
  commute, so the order of streams does not matter; each delivery is applied once by a per-source
  position watermark on the item (`_w#<namespace>`), and the item also keeps the tags of the last
  events it took from that source (`_r#<namespace>`), so that the same event arriving again at a
  new position (a re-send) shortly after is recognised too.

Pure: no boto3. `apply_write` gives the effect on a plain dict, for tests and in-memory folds; the
requests that make these changes on DynamoDB are built by escore.item_writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Key = tuple[str, str]  # (pk, sk)
Op = Literal["update", "put", "delete", "count"]

# Attributes the engine keeps on items; readers ignore every attribute starting with "_".
VERSION_ATTRIBUTE = "_v"
DELETED_ATTRIBUTE = "_deleted"
WATERMARK_PREFIX = "_w#"
RECENT_PREFIX = "_r#"
EXPIRES_ATTRIBUTE = "expires_at"  # a tombstone's TTL (the projection tables' TTL attribute)


@dataclass(frozen=True, slots=True)
class Write:
    """One change to one read-model item.

    `put` replaces the item with `key` + `set`; `update` sets and removes attributes (`create`:
    the item may not exist yet, else it must: an update of an item whose stream has not created
    it is ahead of its predecessor); `delete` tombstones it; `count` adds to counters.
    """

    key: Key
    op: Op
    set: Mapping[str, Any] = field(default_factory=dict)
    add: Mapping[str, int] = field(default_factory=dict)
    remove: frozenset[str] = frozenset()
    create: bool = False

    @property
    def shared(self) -> bool:
        return self.op == "count"

    @property
    def may_create(self) -> bool:
        """Whether the write (as the first of a coalesced run) may find no item."""
        return self.op == "put" or (self.op == "update" and self.create)

    def then(self, later: Write) -> Write:
        """The single write with the effect of `self` followed by `later` (same key, same kind)."""
        if later.key != self.key:
            raise ValueError("only writes to one key coalesce")
        if later.shared != self.shared:
            raise ValueError("an item is either owned by one stream or shared (count), not both")
        if self.shared:
            adds = dict(self.add)
            for name, amount in later.add.items():
                adds[name] = adds.get(name, 0) + amount
            return Write(self.key, "count", {**self.set, **later.set}, adds)
        if later.op == "put":
            return later
        if later.op == "delete":
            # A run that may create and ends deleted: a tombstone that may also be the first write.
            return Write(self.key, "delete", create=self.may_create)
        if self.op == "delete":
            return Write(self.key, "put", apply_update({}, later))
        if self.op == "put":
            return Write(self.key, "put", apply_update(self.set, later))
        sets, removes = dict(self.set), set(self.remove)
        for name, value in later.set.items():
            sets[name] = value
            removes.discard(name)
        for name in later.remove:
            sets.pop(name, None)
            removes.add(name)
        return Write(self.key, "update", sets, remove=frozenset(removes), create=self.create)


def _check_names(names: Iterable[str]) -> None:
    for name in names:
        if name.startswith("_") or name in ("pk", "sk"):
            raise ValueError(f"attribute {name!r} is reserved (the key, or the engine's own `_` attributes)")


def update(key: Key, *, set: Mapping[str, Any] | None = None, remove: Iterable[str] = (),
           create: bool = False) -> Write:
    """SET/REMOVE on an owned item (state from the event alone; counters are `count`)."""
    _check_names([*(set or {}), *remove])
    return Write(key, "update", dict(set or {}), remove=frozenset(remove), create=create)


def put(key: Key, item: Mapping[str, Any]) -> Write:
    """Create or replace an owned item."""
    _check_names(item)
    return Write(key, "put", dict(item))


def delete(key: Key) -> Write:
    """Tombstone an owned item: readers no longer see it; its stream's earlier events cannot revive it."""
    return Write(key, "delete")


def count(key: Key, *, add: Mapping[str, int], set: Mapping[str, Any] | None = None) -> Write:
    """ADD to counters of a shared item (and SET attributes every stream sets alike, e.g. its name)."""
    _check_names([*add, *(set or {})])
    return Write(key, "count", dict(set or {}), dict(add))


def apply_update(attributes: Mapping[str, Any], write: Write) -> dict[str, Any]:
    """An item's attributes (without its key) after an `update` or `count`, as DynamoDB computes them."""
    out = dict(attributes)
    out.update(write.set)
    for name, amount in write.add.items():
        out[name] = out.get(name, 0) + amount
    for name in write.remove:
        out.pop(name, None)
    return out


def apply_write(item: Mapping[str, Any] | None, write: Write) -> dict[str, Any] | None:
    """An item (attributes without key) after a write; None means no item (or a tombstone)."""
    if write.op == "delete":
        return None
    if write.op == "put":
        return dict(write.set)
    return apply_update(item or {}, write)
