"""Reading the event archive (CONTRACT §4): listing, streaming, de-duplication, order, upcasting.

Keys: `events/service=<s>/year=YYYY/month=MM/day=DD/hour=HH/<delivery-stream>-<...>.gz`, each object
gzip JSON Lines, one envelope a line. The hour partitions are *delivery* time, so `since`/`until`
select by when Firehose wrote an object, not by `occurred_at`.

How `ArchiveReader.read` works, and what it holds in memory:

1. List the objects of each service, pruned by the key layout: one LIST per hour prefix for short
   ranges, per day prefix for longer ones (hours filtered from the keys), the service prefix only
   when no `since` is given.
2. Scan: a thread pool reads objects concurrently; each is decompressed incrementally (bounded
   chunks, concatenated gzip members allowed) and split into lines. A line is routed by a hash of
   its `stream_id` to one of P *partitions*; each worker appends to its own bucket per partition,
   in memory when P == 1, else to a spill file in a temporary directory. A worker holds at most one
   decompression window (READ_CHUNK in, OUT_CHUNK out) at a time.
3. Per partition, in order: decode, drop duplicates by `event_id`, group by stream, sort each stream
   by version, check that versions are contiguous, upcast, and yield the streams.

Memory bound: one partition's decoded events. P is chosen from the listed compressed size so that a
partition's decoded events fit `memory_budget` (DECODED_PER_GZ_BYTE is the measured expansion from
gzip bytes to Python objects, about 25). A stream is always whole in one partition (the hash is of
`stream_id`), which is what ordering needs. The disk used by spill files is the archive's
uncompressed size (of the shard being read).

Errors are never silent: a stream whose versions skip (or that does not start at 1 when the whole
archive is read), two events with one (stream, version) but different ids, an undecodable line or
object: each is recorded in `ReadStats` (`gaps`, `conflicts`, `bad_lines`), and `ReadStats.ok`
is false. A stream with a gap yields only its contiguous prefix: nothing after a hole is applied.

`shard=(i, n)` keeps only the streams whose hash falls in the i-th of n equal ranges of the
128-bit MD5 key space (Kinesis' own partition-key hash), so n workers can share one archive.
"""

from __future__ import annotations

import gc
import hashlib
import importlib
import math
import re
import shutil
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from escore.envelope import Envelope, EnvelopeError, from_dict
from escore.upcasting import UpcasterRegistry, upcasters
from eventstack.topology import TOPOLOGY

READ_CHUNK = 256 << 10  # compressed bytes read from an object at a time
OUT_CHUNK = 1 << 20  # at most this many decompressed bytes per step
DECODED_PER_GZ_BYTE = 25
DEFAULT_MEMORY_BUDGET = 1 << 30
HOUR = timedelta(hours=1)
DAY_LISTING_ABOVE_HOURS = 48  # longer ranges list per day prefix
KEY_RE = re.compile(
    r"service=(?P<service>[^/]+)/year=(?P<y>\d{4})/month=(?P<m>\d{2})/day=(?P<d>\d{2})/hour=(?P<h>\d{2})/"
)
_STREAM_MARK = b'"stream_id":"'
_MARK_LENGTH = len(_STREAM_MARK)
_HASH_SPACE = 1 << 128


class ArchiveError(RuntimeError):
    """The archive cannot be read as asked (an object is not gzip, a bad shard spec)."""


class ObjectSource(Protocol):
    """Where archive objects live: S3 in production, a directory for the benchmark."""

    def list(self, prefix: str) -> Iterator[tuple[str, int]]: ...

    def open(self, key: str) -> IO[bytes]: ...


class S3Source:
    def __init__(self, bucket: str, s3_client: Any) -> None:
        self.bucket = bucket
        self.s3 = s3_client

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"], int(item["Size"])

    def open(self, key: str) -> IO[bytes]:
        body: IO[bytes] = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        return body


class DirectorySource:
    """Keys are paths relative to `root` (e.g. a downloaded copy of the bucket)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        base = self.root / prefix
        start = base if base.is_dir() else base.parent
        if not start.exists():
            return
        for path in sorted(start.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and key.startswith(prefix):
                yield key, path.stat().st_size

    def open(self, key: str) -> IO[bytes]:
        return open(self.root / key, "rb")


@dataclass(frozen=True, order=True)
class ArchiveObject:
    key: str
    size: int
    service: str
    hour: datetime


@dataclass(frozen=True)
class StreamGap:
    stream_id: str
    expected: int  # the version that is missing
    found: int  # the next version present


@dataclass(frozen=True)
class VersionConflict:
    stream_id: str
    version: int
    event_ids: tuple[str, str]


@dataclass
class ReadStats:
    objects: int = 0
    compressed_bytes: int = 0
    lines_scanned: int = 0  # every line of every object read
    events_read: int = 0  # lines kept for this shard and the partitions not yet done, duplicates included
    duplicates: int = 0
    events: int = 0  # unique events yielded
    streams: int = 0
    partitions: int = 1
    bad_lines: int = 0
    bad_objects: list[str] = field(default_factory=list)
    gaps: list[StreamGap] = field(default_factory=list)
    conflicts: list[VersionConflict] = field(default_factory=list)
    bad_line_samples: list[str] = field(default_factory=list)
    # streams cut short where an event could not be upcast (e.g. a schema newer than this code)
    upcast_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.bad_lines or self.bad_objects or self.gaps or self.conflicts or self.upcast_errors)

    def problems(self) -> list[str]:
        out = [f"{len(self.gaps)} stream(s) with a version gap"] if self.gaps else []
        out += [f"gap in {g.stream_id}: version {g.expected} missing (next is {g.found})" for g in self.gaps[:5]]
        if self.conflicts:
            out.append(f"{len(self.conflicts)} (stream, version) pair(s) with two different event ids")
        if self.bad_lines:
            out.append(f"{self.bad_lines} line(s) that are not envelopes: {'; '.join(self.bad_line_samples[:3])}")
        if self.bad_objects:
            out.append(f"{len(self.bad_objects)} unreadable object(s): {', '.join(self.bad_objects[:3])}")
        if self.upcast_errors:
            out.append(f"{len(self.upcast_errors)} stream(s) stopped at an event that cannot be upcast: "
                       + "; ".join(self.upcast_errors[:3]))
        return out


@dataclass
class Partition:
    """One hash partition's streams, each whole and in version order, upcast."""

    index: int
    count: int
    streams: list[tuple[str, list[Envelope]]]

    @property
    def events(self) -> int:
        return sum(len(events) for _, events in self.streams)


def parse_shard(spec: str | None) -> tuple[int, int]:
    """`"i/n"` (0 <= i < n) -> (i, n); None -> (0, 1)."""
    if not spec:
        return 0, 1
    try:
        i_text, n_text = spec.split("/")
        index, count = int(i_text), int(n_text)
    except ValueError:
        raise ArchiveError(f"--shard takes i/n, e.g. 0/4; got {spec!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ArchiveError(f"--shard {spec}: need 0 <= i < n")
    return index, count


def stream_hash(stream_id: str) -> int:
    """The 128-bit MD5 of the stream id, as Kinesis hashes a partition key."""
    return int.from_bytes(hashlib.md5(stream_id.encode(), usedforsecurity=False).digest(), "big")


def in_shard(stream_id: str, shard: tuple[int, int]) -> bool:
    index, count = shard
    return count == 1 or stream_hash(stream_id) * count // _HASH_SPACE == index


def service_prefix(service: str, root: str = "events/") -> str:
    return f"{root}service={service}/"


def hour_prefix(service: str, hour: datetime, root: str = "events/") -> str:
    return f"{service_prefix(service, root)}year={hour:%Y}/month={hour:%m}/day={hour:%d}/hour={hour:%H}/"


def day_prefix(service: str, day: datetime, root: str = "events/") -> str:
    return f"{service_prefix(service, root)}year={day:%Y}/month={day:%m}/day={day:%d}/"


def floor_hour(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def key_hour(key: str) -> tuple[str, datetime] | None:
    match = KEY_RE.search(key)
    if match is None:
        return None
    hour = datetime(int(match["y"]), int(match["m"]), int(match["d"]), int(match["h"]), tzinfo=UTC)
    return match["service"], hour


def parse_time(text: str) -> datetime:
    """RFC 3339 or a prefix of it (`2025-11-26`, `2025-11-26T14`); naive means UTC."""
    text = text.strip().replace("Z", "+00:00")
    if len(text) == 13 and "T" in text:  # 2025-11-26T14
        text += ":00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use RFC 3339, e.g. 2026-11-26T14:00:00Z or 2026-11-26") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def gunzip_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    """Decompress a gzip stream (members may be concatenated) in bounded steps."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    started = False
    while chunk := stream.read(READ_CHUNK):
        buffer = chunk
        while buffer:
            if decompressor.eof:  # a new gzip member follows the last one
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            started = True
            out = decompressor.decompress(buffer, OUT_CHUNK)
            if out:
                yield out
            buffer = decompressor.unused_data if decompressor.eof else decompressor.unconsumed_tail
    if started and not decompressor.eof:
        tail = decompressor.flush()
        if tail:
            yield tail
        if not decompressor.eof:
            raise ArchiveError("truncated gzip stream")


def iter_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """The non-empty lines of a gzip JSON Lines stream, without their newlines."""
    pending = b""
    for chunk in gunzip_chunks(stream):
        data = pending + chunk if pending else chunk
        lines = data.split(b"\n")
        pending = lines.pop()
        for line in lines:
            if line and not line.isspace():
                yield line
    if pending and not pending.isspace():
        yield pending


def line_batches(stream: IO[bytes]) -> Iterator[list[bytes]]:
    """`iter_lines`, one list per decompressed chunk (the same lines, in order, and as bounded)."""
    pending = b""
    for chunk in gunzip_chunks(stream):
        data = pending + chunk if pending else chunk
        lines = data.split(b"\n")
        pending = lines.pop()
        batch = [line for line in lines if line and not line.isspace()]
        if batch:
            yield batch
    if pending and not pending.isspace():
        yield [pending]


def _stream_key(line: bytes) -> bytes | None:
    """The UTF-8 bytes of the line's stream_id when `stream_id_of` would take them as they are
    (one mark, no escape) and they are ASCII; else None (then `stream_id_of` decides)."""
    start = line.find(_STREAM_MARK)
    if start < 0:
        return None
    start += _MARK_LENGTH
    if line.find(_STREAM_MARK, start) >= 0:  # a second (non-overlapping) mark: as count() != 1
        return None
    end = line.find(b'"', start)
    if end <= start:
        return None
    key = line[start:end]
    return key if key.isascii() and b"\\" not in key else None


def stream_id_of(line: bytes) -> str:
    """The line's stream_id; a byte search on the compact encoding, a full parse when ambiguous."""
    start = line.find(_STREAM_MARK)
    if start >= 0 and line.count(_STREAM_MARK) == 1:
        start += len(_STREAM_MARK)
        end = line.find(b'"', start)
        if end > start and b"\\" not in line[start:end]:
            return line[start:end].decode()
    raw = orjson.loads(line)
    value = raw.get("stream_id") if isinstance(raw, dict) else None
    if not isinstance(value, str) or not value:
        raise EnvelopeError("no stream_id")
    return value


class _Buckets:
    """Each scanning thread's lines, per partition: in memory, or appended to spill files."""

    def __init__(self, count: int, spill_dir: Path | None) -> None:
        self.count = count
        self.spill_dir = spill_dir
        self._lock = threading.Lock()
        self._local = threading.local()
        self._memory: list[list[list[bytes]]] = []
        self._files: list[list[IO[bytes]]] = []
        self._paths: list[list[Path]] = [[] for _ in range(count)]

    def mine(self) -> tuple[list[list[bytes]] | None, list[IO[bytes]] | None]:
        memory = getattr(self._local, "memory", None)
        files = getattr(self._local, "files", None)
        if memory is None and files is None:
            with self._lock:
                if self.spill_dir is None:
                    memory = [[] for _ in range(self.count)]
                    self._memory.append(memory)
                    self._local.memory = memory
                else:
                    worker = len(self._files)
                    files = []
                    for p in range(self.count):
                        path = self.spill_dir / f"p{p:05d}-w{worker:03d}.jsonl"
                        files.append(open(path, "wb", buffering=1 << 20))  # noqa: SIM115 - closed in close()
                        self._paths[p].append(path)
                    self._files.append(files)
                    self._local.files = files
        return memory, files

    def close(self) -> None:
        for files in self._files:
            for handle in files:
                handle.close()

    def lines(self, partition: int) -> Iterator[bytes]:
        if self.spill_dir is None:
            for memory in self._memory:
                yield from memory[partition]
                memory[partition] = []  # release as soon as read
            return
        for path in self._paths[partition]:
            with open(path, "rb") as handle:
                yield from handle
            path.unlink()


def load_upcasters(services: Iterable[str]) -> None:
    """Import each service's `<service>.schemas`, which registers its upcasting steps."""
    for service in services:
        importlib.import_module(f"{service}.schemas")


ProgressFn = Callable[[str, int], None]  # (what, amount): "object" / "bytes" / "lines"


class ArchiveReader:
    def __init__(
        self,
        bucket: str | None = None,
        s3_client: Any = None,
        *,
        source: ObjectSource | None = None,
        root: str = "events/",
        workers: int = 8,
        upcaster: UpcasterRegistry = upcasters,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        spill_dir: str | Path | None = None,
    ) -> None:
        if source is None:
            if bucket is None or s3_client is None:
                raise ValueError("give bucket and s3_client, or a source")
            source = S3Source(bucket, s3_client)
        self.source = source
        self.root = root
        self.workers = max(1, workers)
        self.upcaster = upcaster
        if upcaster is upcasters:
            load_upcasters(service.name for service in TOPOLOGY.services)
        self.memory_budget = memory_budget
        self.spill_root = Path(spill_dir) if spill_dir else None

    # listing -----------------------------------------------------------------------------------
    def prefixes(self, service: str, since: datetime | None, until: datetime | None) -> list[str]:
        """The LIST prefixes that cover [since, until) for a service."""
        if since is None:
            return [service_prefix(service, self.root)]
        start = floor_hour(since)
        end = floor_hour(until) + HOUR if until else floor_hour(datetime.now(UTC)) + HOUR
        hours = int((end - start) / HOUR)
        if hours <= DAY_LISTING_ABOVE_HOURS:
            return [hour_prefix(service, start + i * HOUR, self.root) for i in range(max(hours, 0))]
        days: list[str] = []
        day = start.replace(hour=0)
        while day < end:
            days.append(day_prefix(service, day, self.root))
            day += timedelta(days=1)
        return days

    def list(
        self,
        service: str,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        max_key: str | None = None,
    ) -> list[ArchiveObject]:
        """The service's objects whose delivery hour is in [floor_hour(since), until), by key.

        `until` is exclusive at hour granularity: an object delivered in until's hour is read only
        when until is not on the hour. `max_key` drops keys after it (a resumed replay reads the
        objects its first run listed, not those delivered since).
        """
        first = floor_hour(since) if since else None
        out: list[ArchiveObject] = []
        for prefix in self.prefixes(service, since, until):
            for key, size in self.source.list(prefix):
                parsed = key_hour(key)
                if parsed is None or parsed[0] != service:
                    continue
                hour = parsed[1]
                if first is not None and hour < first:
                    continue
                if until is not None and hour >= until:
                    continue
                if max_key is not None and key > max_key:
                    continue
                out.append(ArchiveObject(key, size, service, hour))
        out.sort()
        return out

    def iter_lines(self, key: str) -> Iterator[bytes]:
        stream = self.source.open(key)
        try:
            yield from iter_lines(stream)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    def iter_events(self, key: str) -> Iterator[Envelope]:
        """One object's envelopes as written (no de-duplication, no upcasting)."""
        for line in self.iter_lines(key):
            yield from_dict(orjson.loads(line))

    # reading -----------------------------------------------------------------------------------
    def partitions_for(self, objects: Sequence[ArchiveObject], shard: tuple[int, int] = (0, 1)) -> int:
        total = sum(o.size for o in objects) / shard[1]
        return max(1, math.ceil(total * DECODED_PER_GZ_BYTE / self.memory_budget))

    def read(
        self,
        objects: Sequence[ArchiveObject],
        *,
        shard: tuple[int, int] = (0, 1),
        partitions: int | None = None,
        skip_partitions: Iterable[int] = (),
        require_start: bool = True,
        stats: ReadStats | None = None,
        progress: ProgressFn | None = None,
        mark: Mapping[str, Any] | None = None,
    ) -> Iterator[Partition]:
        """Scan `objects`, then yield each partition's streams (see the module's docstring).

        `require_start`: a stream must begin at version 1 (true when the whole archive is read;
        false with `since`, where a stream's first events may be in earlier hours).
        `skip_partitions`: partitions already done (a resumed replay); their lines are not kept.
        `mark`: entries added to every event's metadata (replay's `{"replayed": true}`), set while
        decoding, which costs nothing next to copying each envelope afterwards.
        """
        stats = stats if stats is not None else ReadStats()
        count = partitions or self.partitions_for(objects, shard)
        stats.partitions = count
        skip = frozenset(skip_partitions)
        spill_dir: Path | None = None
        if count > 1:
            base = self.spill_root
            if base is not None:
                base.mkdir(parents=True, exist_ok=True)
            spill_dir = Path(tempfile.mkdtemp(prefix="eventstack-replay-", dir=base))
        buckets = _Buckets(count, spill_dir)
        try:
            self._scan(objects, buckets, shard, skip, stats, progress)
            buckets.close()  # flush the spill files before reading them back
            for index in range(count):
                if index in skip:
                    continue
                partition = self._partition(index, count, buckets.lines(index), require_start, stats, mark)
                # While the consumer folds the partition, its (acyclic) objects are kept out of the
                # cyclic collector's generations, as they were while being built: otherwise the
                # consumer's own allocations make it traverse them all, young then old, each time.
                # Nothing is frozen if the process already uses gc.freeze for its own purposes.
                frozen = gc.isenabled() and gc.get_freeze_count() == 0
                if frozen:
                    gc.freeze()
                try:
                    yield partition
                finally:
                    if frozen:
                        gc.unfreeze()  # back to the oldest generation: collected as usual from now on
                del partition  # not held while the next partition is built (the memory bound)
        finally:
            buckets.close()
            if spill_dir is not None:
                shutil.rmtree(spill_dir, ignore_errors=True)

    def read_all(
        self,
        services: Sequence[str],
        since: datetime | None = None,
        until: datetime | None = None,
        **kwargs: Any,
    ) -> Iterator[Envelope]:
        """Convenience: every unique event of `services` in the range, stream by stream."""
        objects = [o for service in services for o in self.list(service, since, until)]
        kwargs.setdefault("require_start", since is None)
        for partition in self.read(objects, **kwargs):
            for _, events in partition.streams:
                yield from events

    def _scan(
        self,
        objects: Sequence[ArchiveObject],
        buckets: _Buckets,
        shard: tuple[int, int],
        skip: frozenset[int],
        stats: ReadStats,
        progress: ProgressFn | None,
    ) -> None:
        lock = threading.Lock()
        count = buckets.count
        need_id = count > 1 or shard[1] > 1

        sharded = shard[1] > 1
        crc32 = zlib.crc32

        def scan_one(obj: ArchiveObject) -> None:
            memory, files = buckets.mine()
            lines = kept = bad = 0
            samples: list[str] = []
            stream: IO[bytes] | None = None
            try:
                stream = self.source.open(obj.key)
                for batch in line_batches(stream):
                    lines += len(batch)
                    if not need_id:
                        kept += len(batch)
                        if memory is not None:
                            memory[0].extend(batch)
                        else:
                            assert files is not None
                            files[0].write(b"\n".join(batch) + b"\n")
                        continue
                    routed: list[list[bytes]] = [[] for _ in range(count)]
                    for line in batch:
                        key = None if sharded else _stream_key(line)
                        if key is None:  # the general case: exactly as stream_id_of decides
                            try:
                                stream_id = stream_id_of(line)
                            except (ValueError, EnvelopeError) as exc:
                                bad += 1
                                if len(samples) < 3:
                                    samples.append(f"{obj.key}: {exc}")
                                continue
                            if sharded and not in_shard(stream_id, shard):
                                continue
                            key = stream_id.encode()
                        routed[crc32(key) % count].append(line)
                    for partition, chosen in enumerate(routed):
                        if not chosen or partition in skip:
                            continue
                        kept += len(chosen)
                        if memory is not None:
                            memory[partition].extend(chosen)
                        else:
                            assert files is not None
                            files[partition].write(b"\n".join(chosen) + b"\n")
            except (ArchiveError, zlib.error, OSError) as exc:
                with lock:
                    stats.bad_objects.append(f"{obj.key} ({exc})")
            finally:
                close = getattr(stream, "close", None)  # (not every S3 body has one)
                if close is not None:
                    close()
            with lock:
                stats.objects += 1
                stats.compressed_bytes += obj.size
                stats.lines_scanned += lines
                stats.events_read += kept
                stats.bad_lines += bad
                stats.bad_line_samples.extend(samples[: max(0, 3 - len(stats.bad_line_samples))])
            if progress is not None:
                progress("object", 1)
                progress("lines", kept)

        if self.workers == 1 or len(objects) <= 1:
            for obj in objects:
                scan_one(obj)
            return
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="archive") as pool:
            for _ in pool.map(scan_one, objects):
                pass

    def _partition(self, *args: Any, **kwargs: Any) -> Partition:
        # A partition is millions of small acyclic objects built in one go: the cyclic collector
        # would re-scan them again and again as they pile up (the replay ran 2x slower with it).
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._build_partition(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    def _build_partition(
        self,
        index: int,
        count: int,
        lines: Iterator[bytes],
        require_start: bool,
        stats: ReadStats,
        mark: Mapping[str, Any] | None = None,
    ) -> Partition:
        seen: set[str] = set()
        remember = seen.add
        streams: dict[str, dict[int, Envelope]] = {}
        stream_versions = streams.get
        loads = orjson.loads
        for line in lines:
            try:
                raw = loads(line)
                if mark and isinstance(raw, dict):
                    metadata = raw.get("metadata")
                    if isinstance(metadata, dict):
                        metadata.update(mark)
                event = from_dict(raw)
            except (orjson.JSONDecodeError, EnvelopeError) as exc:
                stats.bad_lines += 1
                if len(stats.bad_line_samples) < 3:
                    stats.bad_line_samples.append(str(exc))
                continue
            event_id = event.event_id
            if event_id in seen:
                stats.duplicates += 1
                continue
            remember(event_id)
            stream_id = event.stream_id
            versions = stream_versions(stream_id)
            if versions is None:
                versions = streams[stream_id] = {}
            version = event.version
            held = versions.get(version)
            if held is not None:
                stats.conflicts.append(VersionConflict(stream_id, version, (held.event_id, event_id)))
                continue
            versions[version] = event
        del seen
        out: list[tuple[str, list[Envelope]]] = []
        upcast = self.upcaster.upcast
        for stream_id in sorted(streams):
            versions = streams.pop(stream_id)
            ordered = sorted(versions)
            expected = 1 if require_start else ordered[0]
            events: list[Envelope] = []
            for version in ordered:
                if version != expected:
                    stats.gaps.append(StreamGap(stream_id, expected, version))
                    break
                try:
                    events.append(upcast(versions[version]))
                except Exception as exc:  # an upcaster's failure stops this stream only, and is reported
                    stats.upcast_errors.append(f"{stream_id} v{version}: {exc}")
                    break
                expected += 1
            if events:
                out.append((stream_id, events))
                stats.events += len(events)
        stats.streams += len(out)
        return Partition(index, count, out)
