"""Scanning archive objects into hash partitions: sharding by stream, routing lines, spilling.

A line is routed by a hash of its `stream_id` (CRC-32, read from the compact encoding's bytes
without parsing where that is unambiguous, `stream_id_of`) to one of P partitions, so a stream is
always whole in one partition, which is what ordering needs. Each scanning thread appends to its
own bucket per partition (`SpillBuckets`): in memory when P == 1, else a spill file in a temporary
directory (the disk used is the uncompressed size of the shard read). A thread holds at most one
decompression window (eventstack.archive_gzip) at a time.

`shard=(i, n)` keeps only the streams whose hash falls in the i-th of n equal ranges of the MD5 key
space (its top 32 bits: the replay plan's bucket rule, `in_shard`), so n workers share one archive.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import orjson

from escore.envelope import EnvelopeError
from escore.replay_file import stream_bucket
from eventstack.archive_gzip import line_batches
from eventstack.archive_layout import ArchiveError, ArchiveObject, ObjectSource
from eventstack.archive_partition import ReadStats

_STREAM_MARK = b'"stream_id":"'
_MARK_LENGTH = len(_STREAM_MARK)

ProgressFn = Callable[[str, int], None]  # (what, amount): "object" / "bytes" / "lines"


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


def in_shard(stream_id: str, shard: tuple[int, int]) -> bool:
    """Whether the stream is in range `index` of `count`: the replay plan's bucket rule
    (escore.replay_file.stream_bucket, the top 32 bits of the MD5 times count, shifted right by 32;
    eventstack/sql/replay_plan.sql computes the same), so a shard and a plan file hold the same streams."""
    index, count = shard
    return count == 1 or stream_bucket(stream_id, count) == index


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


class SpillBuckets:
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


def scan(
    source: ObjectSource,
    objects: Sequence[ArchiveObject],
    buckets: SpillBuckets,
    *,
    shard: tuple[int, int],
    skip: frozenset[int],
    stats: ReadStats,
    progress: ProgressFn | None,
    workers: int,
) -> None:
    """Read `objects` (on `workers` threads) into `buckets`: every line of the shard's streams, in the
    partition of its stream, except partitions in `skip`. Unreadable objects and lines without a
    stream id are counted in `stats`."""
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
            stream = source.open(obj.key)
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

    if workers == 1 or len(objects) <= 1:
        for obj in objects:
            scan_one(obj)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="archive") as pool:
        for _ in pool.map(scan_one, objects):
            pass
