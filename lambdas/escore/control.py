"""Replay's control of a projection table, and the gate the live projector passes each batch through.

`eventstack replay` writes into a table the live projector may also be writing. Two writers of one
namespace (`<stream>:<shard>`, escore.projection) are exact only if the later one never writes a
batch that starts beyond what the other has applied: a shared item's watermark would move past
deliveries the other has not written yet, and they would be skipped. So while replay works on a
table, it says so in a **control item** of that table, `pk = "$control"`, `sk = "$control"`
(keys starting with `$` are never read-model items):

- `{mode: "rebuild", until}`: `--into in-place` is emptying and rebuilding the table. The live
  projector writes nothing: every batch is refused (reported failed; Lambda delivers it again).
- `{mode: "handoff", tail: {namespace: position}, until}`: replay's tail applies each shard after
  its cut, `tail` says how far. A live batch whose first position in a namespace is beyond that
  namespace's tail (or in a namespace the tail does not list) is refused; one that starts at or
  before it overlaps what the tail applied, and the items' watermarks make the overlap a no-op.
- no item, or `until` passed: everything goes through. `until` is a lease replay renews while it
  works, so a replay that died does not stop the projection for ever.

The gate reads the item with a consistent GetItem, cached `GATE_CACHE_SECONDS` per table: one read
per function instance per window, nothing per batch. A cached answer is safe: replay writes the
item, then waits longer than the cache before relying on it (in-place), or writes it before the
projector can resolve the table at all (a new table, before the pointer switch); a cached tail is
lower than the real one (it only grows), so it refuses more, never less. A refused hand-off batch is
re-checked against a fresh read for up to `wait_seconds` before it is given up: the tail is usually
a poll interval away, and a refusal costs the mapping one of its retries.

`$control`/`$coverage` records, per live namespace, the position up to which the table is known to
hold every record (written at the end of a replay): `eventstack dlq redrive` skips the records a
replay already applied.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger(__name__)

CONTROL_PK = "$control"
CONTROL_SK = "$control"
COVERAGE_SK = "$coverage"
GATE_CACHE_SECONDS = 5.0
GATE_WAIT_SECONDS = 5.0
Mode = Literal["handoff", "rebuild"]


@dataclass(frozen=True)
class Control:
    mode: Mode
    until: float  # epoch seconds: past it, the control no longer holds anything back
    tail: dict[str, str] = field(default_factory=dict)  # handoff: namespace -> last position applied

    def active(self, now: float) -> bool:
        return now < self.until

    def refusal(self, firsts: Mapping[str, str], now: float) -> str | None:
        """Why a batch starting at `firsts` (namespace -> lowest position) may not be written; None if it may."""
        if not self.active(now):
            return None
        if self.mode == "rebuild":
            return "the table is being rebuilt in place (eventstack replay --into in-place)"
        for namespace, first in sorted(firsts.items()):
            applied = self.tail.get(namespace)
            if applied is None:
                return f"replay hand-off: {namespace} is not tailed yet"
            if first > applied:
                return f"replay hand-off: {namespace} starts at {first.lstrip('0')}, beyond the tail ({applied.lstrip('0') or 'nothing'})"
        return None


def _key(sk: str) -> dict[str, Any]:
    return {"pk": {"S": CONTROL_PK}, "sk": {"S": sk}}


def _tail_attr(tail: Mapping[str, str]) -> dict[str, Any]:
    return {"M": {namespace: {"S": position} for namespace, position in tail.items()}}


def read_control(client: Any, table: str) -> Control | None:
    item = client.get_item(TableName=table, Key=_key(CONTROL_SK), ConsistentRead=True).get("Item")
    if not item or "mode" not in item:
        return None
    mode = str(item["mode"]["S"])
    if mode not in ("handoff", "rebuild"):
        raise ValueError(f"unknown control mode {mode!r} in {table}")
    tail = {name: str(value["S"]) for name, value in item.get("tail", {}).get("M", {}).items()}
    return Control(mode, float(item["until"]["N"]), tail)  # type: ignore[arg-type]


def put_rebuild(client: Any, table: str, until: float) -> None:
    client.put_item(TableName=table, Item={**_key(CONTROL_SK), "mode": {"S": "rebuild"},
                                           "until": {"N": str(int(until))}})


def put_handoff(client: Any, table: str, tail: Mapping[str, str], until: float) -> None:
    client.put_item(TableName=table, Item={**_key(CONTROL_SK), "mode": {"S": "handoff"},
                                           "tail": _tail_attr(tail), "until": {"N": str(int(until))}})


def update_tail(client: Any, table: str, tail: Mapping[str, str], until: float | None = None) -> None:
    """Record how far the hand-off's tail has applied, and extend its lease to `until` (only while
    the hand-off control is there)."""
    names = {"#m": "mode"}
    values: dict[str, Any] = {":t": _tail_attr(tail), ":h": {"S": "handoff"}}
    expression = "SET tail = :t"
    if until is not None:
        names["#u"] = "until"
        values[":u"] = {"N": str(int(until))}
        expression += ", #u = :u"
    try:
        client.update_item(TableName=table, Key=_key(CONTROL_SK), UpdateExpression=expression,
                           ConditionExpression="#m = :h", ExpressionAttributeNames=names,
                           ExpressionAttributeValues=values)
    except Exception as exc:
        if _code(exc) != "ConditionalCheckFailedException":
            raise


def renew(client: Any, table: str, mode: Mode, until: float) -> None:
    """Extend the lease of the control in `mode` (nothing if it is gone or changed)."""
    try:
        client.update_item(TableName=table, Key=_key(CONTROL_SK), UpdateExpression="SET #u = :u",
                           ConditionExpression="#m = :m", ExpressionAttributeNames={"#m": "mode", "#u": "until"},
                           ExpressionAttributeValues={":u": {"N": str(int(until))}, ":m": {"S": mode}})
    except Exception as exc:
        if _code(exc) != "ConditionalCheckFailedException":
            raise


def delete_control(client: Any, table: str) -> None:
    client.delete_item(TableName=table, Key=_key(CONTROL_SK))


def read_coverage(client: Any, table: str) -> dict[str, str]:
    """Namespace -> position up to which `table` holds every record (written by the last replay)."""
    item = client.get_item(TableName=table, Key=_key(COVERAGE_SK), ConsistentRead=True).get("Item")
    if not item:
        return {}
    return {name: str(value["S"]) for name, value in item.get("positions", {}).get("M", {}).items()}


def write_coverage(client: Any, table: str, positions: Mapping[str, str], at: float) -> None:
    client.put_item(TableName=table, Item={**_key(COVERAGE_SK), "positions": _tail_attr(positions),
                                           "at": {"N": str(int(at))}})


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


class Gate:
    """The live projector's check of its table's control item, once per batch; one per function instance.

    `table` is the projector's table (a name, or the resolver of the active-table pointer). `admit`
    resolves it once and pins it: pass `gate.table` as the Projector's table, so the projector
    writes the very table whose control was checked, even if the pointer moves in between.
    """

    def __init__(
        self,
        client: Any,
        table: str | Callable[[], str],
        *,
        cache_seconds: float = GATE_CACHE_SECONDS,
        wait_seconds: float = GATE_WAIT_SECONDS,
        poll_seconds: float = 0.25,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._resolve = table if callable(table) else (lambda: table)
        self._cache_seconds = cache_seconds
        self._wait_seconds = wait_seconds
        self._poll_seconds = poll_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._cache: dict[str, tuple[Control | None, float]] = {}
        self._pinned: str | None = None

    def table(self) -> str:
        """The table the last `admit` checked (resolved now if there was none)."""
        if self._pinned is None:
            self._pinned = self._resolve()
        return self._pinned

    def admit(self, firsts: Mapping[str, str]) -> str | None:
        """None if a batch starting at `firsts` (namespace -> its lowest position) may be written, else why not."""
        table = self._pinned = self._resolve()
        try:
            control = self._control(table, fresh=False)
        except Exception as exc:  # cannot tell: refuse, the batch comes back
            log.warning("gate: reading the control item of %s failed: %r", table, exc)
            return f"could not read the control item of {table}: {exc}"
        reason = control.refusal(firsts, self._clock()) if control else None
        if reason is None or control is None or control.mode != "handoff" or self._wait_seconds <= 0:
            return reason
        deadline = self._monotonic() + self._wait_seconds
        while self._monotonic() < deadline:  # the tail is usually a poll away: wait for it a little
            self._sleep(self._poll_seconds)
            try:
                control = self._control(table, fresh=True)
            except Exception as exc:
                return f"could not read the control item of {table}: {exc}"
            reason = control.refusal(firsts, self._clock()) if control else None
            if reason is None:
                return None
        return reason

    def _control(self, table: str, *, fresh: bool) -> Control | None:
        now = self._monotonic()
        cached = self._cache.get(table)
        if cached is not None and not fresh and now < cached[1]:
            return cached[0]
        control = read_control(self._client, table)
        self._cache[table] = (control, now + self._cache_seconds)
        return control
