"""One file of a replay plan folded into the target table: the Map step's unit of work (docs/replay.md).

A replay plan (eventstack.replay_plan; the query eventstack/sql/replay_plan.sql) holds the window's
events de-duplicated by `event_id` (the first archived copy; the stream records up to the cuts after
the archive), bucketed by `stream_bucket(stream_id, count)` into `count` buckets, each written as
gzip JSON Lines sorted by (stream_id, version), every line the envelope exactly as archived.
`fold_plan_file` folds bucket `index` of `count`: it reads the bucket's keys (each sorted; several
keys are merged), decodes each line (marked `metadata.replayed = true`), reports two events at one
(stream, version), folds stream by stream with `escore.rebuild.TableFold` (per-stream state, a gap
stops its stream) and writes with `write_fold` exactly as a replay worker does: owned items every
`OWNED_CHUNK` items, shared items at the end in the namespace `replay:<index>/<count>` with the live
marks of every cut. Then the bucket's done marker (`$replay#file:<index>/<count>` / `$done`), so a
bucket run again is skipped, and a failed bucket is retried alone. Nothing is written past a problem
but the owned items (version-conditioned: a later run writes nothing twice); shared items and the
marker are only written when the bucket had none.

It imports nothing of eventstack/ (docs/architecture.md): the replay-worker Lambda
(lambdas/replay_worker/handler.py) runs it as the local engine's process pool does.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import heapq
import importlib
import itertools
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from escore.engine import position_of
from escore.envelope import Envelope, EnvelopeError, from_dict
from escore.projection import REPLAYED, ProjectionSpec
from escore.projector_lambda import namespace
from escore.rebuild import TableFold, WriteStats, live_marks, write_fold

DONE_SK = "$done"
READ_CHUNK = 1 << 20  # compressed bytes read at a time
OWNED_CHUNK = 20_000  # owned items held before they are written (the memory bound, with one stream's state)
_HASH_SPACE_BITS = 32


def stream_bucket(stream_id: str, count: int) -> int:
    """The bucket of a stream: the top 32 bits of MD5(stream_id, UTF-8) times `count`, shifted right by
    32. The plan's SQL computes the same (eventstack/sql/replay_plan.sql), `--shard i/n` too."""
    top = int.from_bytes(hashlib.md5(stream_id.encode(), usedforsecurity=False).digest()[:4], "big")
    return (top * count) >> _HASH_SPACE_BITS


def done_key(index: int, count: int) -> tuple[str, str]:
    """The done marker of bucket `index` of `count`, in the target table."""
    return (f"$replay#file:{index}/{count}", DONE_SK)


def rebuild_namespace(index: int, count: int) -> str:
    """The shared items' watermark namespace of one bucket (as a `--shard` worker's)."""
    return f"replay:{index}/{count}"


class PlanItem(BaseModel):
    """One Distributed Map item: a bucket of the plan and everything needed to fold it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    projection: str
    folds: str  # the module holding PROJECTION, e.g. "profiles.projectors.user_timeline"
    stage: str
    table: str  # the target table
    bucket: str  # the S3 bucket holding the plan
    keys: list[str]  # the bucket's plan files (gzip JSON Lines, each sorted by (stream_id, version))
    index: int = Field(ge=0)
    count: int = Field(ge=1)
    cuts: dict[str, dict[str, str]] = Field(default_factory=dict)  # stream -> shard id -> sequence number
    require_start: bool = True  # a stream starts at version 1 (false for a --since window)
    origins: str | None = None  # with count 1: a gzip JSON Lines key of [event_id, namespace, position]

    def model_post_init(self, _context: Any) -> None:
        if self.index >= self.count:
            raise ValueError(f"index {self.index} is not below count {self.count}")


@dataclass
class FileResult:
    """What folding one bucket did; the handler's return value (`as_dict`)."""

    index: int
    count: int
    status: str = "done"  # done | already-done | problems
    lines: int = 0  # lines read from the plan files
    events: int = 0  # events folded or passed over (unique)
    folded: int = 0
    skipped: int = 0  # types the projection does not read
    duplicates: int = 0
    failed: int = 0
    items: int = 0  # owned and shared items the fold produced
    written: int = 0
    already: int = 0
    problems: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != "problems"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Opener = Callable[[str], IO[bytes]]


def s3_opener(s3: Any, bucket: str) -> Opener:
    def open_key(key: str) -> IO[bytes]:
        body: IO[bytes] = s3.get_object(Bucket=bucket, Key=key)["Body"]
        return body

    return open_key


def load_spec(module: str, projection: str) -> ProjectionSpec:
    spec = getattr(importlib.import_module(module), "PROJECTION", None)
    if not isinstance(spec, ProjectionSpec) or spec.name != projection:
        raise ValueError(f"{module} has no PROJECTION named {projection!r}")
    return spec


def _batches(stream: IO[bytes]) -> Iterator[list[bytes]]:
    """The non-empty lines of a gzip stream (members may be concatenated), a decompressed chunk's
    worth at a time. (eventstack.archive_gzip does the same for the CLI; nothing in lambdas/ may import it.)"""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = b""
    while chunk := stream.read(READ_CHUNK):
        while chunk:
            if decompressor.eof:  # another gzip member follows
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data = pending + decompressor.decompress(chunk)
            chunk = decompressor.unused_data if decompressor.eof else b""
            lines = data.split(b"\n")
            pending = lines.pop()
            yield [line for line in lines if line]
    if not decompressor.eof and (decompressor.unconsumed_tail or pending or decompressor.flush()):
        raise EOFError("truncated gzip stream")
    if pending.strip():
        yield [pending]


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    for batch in _batches(stream):
        yield from batch


_MARK = {REPLAYED: True}


class _Reader:
    """The bucket's lines as envelopes, in (stream_id, version) order; bad lines and conflicts counted."""

    def __init__(self, result: FileResult) -> None:
        self.result = result
        self.bad_lines = 0
        self.samples: list[str] = []
        self.conflicts = 0
        self.disorder: str | None = None

    def decoded(self, key: str, stream: IO[bytes]) -> Iterator[list[Envelope]]:
        """One key's envelopes (marked replayed), a decompressed chunk's worth at a time."""
        loads, result, mark = orjson.loads, self.result, _MARK
        for batch in _batches(stream):
            result.lines += len(batch)
            events: list[Envelope] = []
            add = events.append
            for line in batch:
                try:
                    raw = loads(line)
                    metadata = raw.get("metadata") if type(raw) is dict else None
                    if type(metadata) is dict:
                        metadata.update(mark)
                    add(from_dict(raw))
                except (orjson.JSONDecodeError, EnvelopeError) as exc:
                    self.bad_lines += 1
                    if len(self.samples) < 3:
                        self.samples.append(f"{key}: {exc}")
            yield events

    def streams(self, sources: list[tuple[str, IO[bytes]]]) -> Iterator[tuple[str, list[Envelope]]]:
        """Each stream's events, in version order, one copy per version (the first)."""
        batches: Iterable[list[Envelope]]
        if len(sources) == 1:  # the usual case: a bucket is one plan file, already in order
            batches = self.decoded(*sources[0])
        else:  # each key is sorted: merged into one order
            merged = heapq.merge(*(itertools.chain.from_iterable(self.decoded(key, stream)) for key, stream in sources),
                                 key=_order)
            batches = iter(lambda: list(itertools.islice(merged, 4096)), [])
        current: str | None = None
        events: list[Envelope] = []
        last = 0
        for batch in batches:
            for event in batch:
                stream_id, version = event.stream_id, event.version
                if stream_id != current:
                    if current is not None:
                        if stream_id < current and self.disorder is None:
                            self.disorder = f"{stream_id} after {current}"
                        yield current, events
                    current, events, last = stream_id, [event], version
                    continue
                if version == last:
                    if events[-1].event_id != event.event_id:
                        self.conflicts += 1
                        if len(self.result.problems) < 5:
                            self.result.problems.append(f"{stream_id} v{version}: two events "
                                                        f"({events[-1].event_id}, {event.event_id})")
                    continue  # (the same event twice cannot happen: the plan has one copy of each)
                if version < last and self.disorder is None:
                    self.disorder = f"{stream_id} v{version} after v{last}"
                events.append(event)
                last = version
        if current is not None:
            yield current, events

def _order(event: Envelope) -> tuple[str, int]:
    return event.stream_id, event.version


def read_origins(stream: IO[bytes]) -> dict[str, tuple[str, str]]:
    """event id -> (namespace, position), from the plan's origins file."""
    out: dict[str, tuple[str, str]] = {}
    for line in _lines(stream):
        event_id, space, position = orjson.loads(line)
        out[event_id] = (space, position)
    return out


def cut_marks(cuts: dict[str, dict[str, str]]) -> dict[str, str]:
    """The live marks of every cut: `_w#<stream>:<shard>` -> position (as a replay worker writes them)."""
    return live_marks({namespace(stream, shard_id): position_of(seq)
                       for stream, shards in cuts.items() for shard_id, seq in shards.items()})


def fold_plan_file(
    item: PlanItem,
    dynamodb: Any | None,
    open_key: Opener,
    *,
    spec: ProjectionSpec | None = None,
    write_workers: int = 4,
    stats: WriteStats | None = None,
    progress: Callable[[int], None] | None = None,
) -> FileResult:
    """Fold bucket `item.index` of `item.count` into `item.table` (see the module's docstring).

    `dynamodb` None folds without writing anything (the benchmark's fold alone, bench/replay.py):
    the items are made and counted, then dropped."""
    started = time.monotonic()
    result = FileResult(item.index, item.count)
    key = done_key(item.index, item.count)
    if dynamodb is not None and dynamodb.get_item(
            TableName=item.table, Key={"pk": {"S": key[0]}, "sk": {"S": key[1]}}, ConsistentRead=True).get("Item"):
        result.status = "already-done"
        return result
    spec = spec or load_spec(item.folds, item.projection)
    origins = None
    if item.origins and item.count == 1:
        with contextlib.closing(open_key(item.origins)) as stream:
            origins = read_origins(stream)
    # The recent events of a shared item are one value per shard: exact only with one bucket.
    fold = TableFold(spec, require_start=item.require_start, origins=origins)
    writes = stats if stats is not None else WriteStats()
    before = (writes.written, writes.already)
    space = rebuild_namespace(item.index, item.count)
    marks = cut_marks(item.cuts)
    reader = _Reader(result)
    sources = [(k, open_key(k)) for k in item.keys]

    def write_owned() -> None:
        if dynamodb is None:
            result.items += len(fold.take_owned())
        else:
            result.items += len(fold.owned)
            write_fold(fold, dynamodb, item.table, space, marks, shared=False, workers=write_workers, stats=writes)

    # Millions of small acyclic objects go through here: the cyclic collector would re-scan the
    # survivors again and again (measured: a fifth of the fold's time); it runs again after the file.
    collecting = gc.isenabled()
    gc.disable()
    try:
        apply, states = fold.apply_stream, fold.states
        for stream_id, events in reader.streams(sources):
            apply(stream_id, events)
            states.pop(stream_id, None)  # (`fold.forget`: the stream is folded to its end)
            if len(fold.owned) >= OWNED_CHUNK:
                write_owned()
            if progress is not None:
                progress(len(events))
    finally:
        if collecting:
            gc.enable()
        for _, stream in sources:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
    write_owned()
    result.items += len(fold.shared)
    s = fold.stats
    result.folded, result.skipped, result.duplicates, result.failed = s.folded, s.skipped, s.duplicates, s.failed
    result.events = s.folded + s.skipped
    result.failures = s.failures[:10]
    if reader.conflicts:
        result.problems.insert(0, f"{reader.conflicts} (stream, version) pair(s) with two different event ids")
    if reader.bad_lines:
        result.problems.append(f"{reader.bad_lines} line(s) that are not envelopes: {'; '.join(reader.samples)}")
    if reader.disorder:
        result.problems.append(f"the plan of bucket {item.index}/{item.count} is not sorted: {reader.disorder}")
    result.problems += s.problems()
    if result.problems or result.failed:
        result.status = "problems"
    elif dynamodb is not None:
        write_fold(fold, dynamodb, item.table, space, marks, owned={}, shared=True, workers=write_workers, stats=writes)
        state = {"events": result.events, "items": writes.written + writes.already - sum(before)}
        dynamodb.put_item(TableName=item.table, Item={"pk": {"S": key[0]}, "sk": {"S": key[1]},
                                                      "state": {"S": orjson.dumps(state).decode()}})
    result.written, result.already = writes.written - before[0], writes.already - before[1]
    result.seconds = time.monotonic() - started
    return result
