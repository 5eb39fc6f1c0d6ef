"""Reading the event archive (docs/api.md, "The archive"): `ArchiveReader` lists, streams, de-duplicates, orders, upcasts.

Objects are gzip JSON Lines, one envelope a line, under hour partitions of *delivery* time
(eventstack.archive_layout), so `since`/`until` select by when Firehose wrote an object, not by
`occurred_at`. How `ArchiveReader.read` works, and what it holds in memory:

1. List the objects of each service, pruned by the key layout (eventstack.archive_layout).
2. Scan: a thread pool reads objects concurrently, each decompressed incrementally
   (eventstack.archive_gzip); every line is routed by a hash of its `stream_id` to one of P hash
   *partitions*, kept in memory when P == 1, else spilled to temporary files
   (eventstack.archive_scan, which also keeps only the streams of a `shard`).
3. Per partition, in order: decode, drop duplicates by `event_id`, group by stream, sort each stream
   by version, check that versions are contiguous, upcast, and yield the streams
   (eventstack.archive_partition).

Memory bound: one partition's decoded events. P is chosen from the listed compressed size so that a
partition's decoded events fit `memory_budget` (DECODED_PER_GZ_BYTE is the measured expansion from
gzip bytes to Python objects, about 25). A stream is always whole in one partition.

Errors are never silent: a stream whose versions skip (or that does not start at 1 when the whole
archive is read), two events with one (stream, version) but different ids, an undecodable line or
object: each is recorded in `ReadStats` (`gaps`, `conflicts`, `bad_lines`, `bad_objects`), and
`ReadStats.ok` is false. A stream with a gap yields only its contiguous prefix.
"""

from __future__ import annotations

import gc
import math
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from escore.envelope import Envelope
from escore.upcasting import UpcasterRegistry
from eventstack.archive_gzip import iter_lines
from eventstack.archive_layout import (
    ArchiveError,
    ArchiveObject,
    DirectorySource,
    ObjectSource,
    S3Source,
    hour_prefix,
    list_objects,
    parse_time,
)
from eventstack.archive_partition import Partition, ReadStats, build_partition
from eventstack.archive_scan import ProgressFn, SpillBuckets, parse_shard, scan
from eventstack.schemas import registry_of_services
from eventstack.topology import TOPOLOGY

# Re-exported from where they live, for the modules that import them from here: ArchiveError,
# parse_shard, parse_time (eventstack/commands/), DirectorySource, ReadStats, hour_prefix and
# iter_lines (bench/replay.py).
__all__ = [
    "ArchiveError", "ArchiveReader", "DirectorySource", "ReadStats", "hour_prefix", "iter_lines", "parse_shard",
    "parse_time",
]

DECODED_PER_GZ_BYTE = 25
DEFAULT_MEMORY_BUDGET = 1 << 30


class ArchiveReader:
    def __init__(
        self,
        bucket: str | None = None,
        s3_client: Any = None,
        *,
        source: ObjectSource | None = None,
        root: str = "events/",
        workers: int = 8,
        upcaster: UpcasterRegistry | None = None,
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
        # default: every service's contract (a reader of the whole archive reads every stream)
        self.upcaster = upcaster if upcaster is not None else registry_of_services(TOPOLOGY.services)
        self.memory_budget = memory_budget
        self.spill_root = Path(spill_dir) if spill_dir else None

    # listing -----------------------------------------------------------------------------------
    def list(
        self,
        service: str,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        max_key: str | None = None,
    ) -> list[ArchiveObject]:
        """The service's objects whose delivery hour is in [floor_hour(since), until), by key
        (eventstack.archive_layout.list_objects)."""
        return list_objects(self.source, service, since, until, max_key=max_key, root=self.root)

    def iter_lines(self, key: str) -> Iterator[bytes]:
        """One object's lines, as written."""
        stream = self.source.open(key)
        try:
            yield from iter_lines(stream)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

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
        buckets = SpillBuckets(count, spill_dir)
        try:
            scan(self.source, objects, buckets, shard=shard, skip=skip, stats=stats, progress=progress,
                 workers=self.workers)
            buckets.close()  # flush the spill files before reading them back
            for index in range(count):
                if index in skip:
                    continue
                partition = build_partition(index, count, buckets.lines(index), require_start=require_start,
                                            stats=stats, upcaster=self.upcaster, mark=mark)
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
