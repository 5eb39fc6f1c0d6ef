"""One hash partition's lines made into streams: de-duplicated, ordered, checked for gaps, upcast.

`build_partition` decodes the lines, drops duplicates by `event_id` (at-least-once delivery puts an
event in several objects), groups the events by stream, sorts each stream by version, checks that
versions are contiguous (from 1 when the whole archive is read), and upcasts. Nothing is silent:
two events with one (stream, version) but different ids, an undecodable line, a gap, an event no
upcaster can raise are each recorded in `ReadStats`, and a stream with a gap or an upcast failure
yields only its contiguous prefix: nothing after a hole is applied.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from escore.envelope import Envelope, EnvelopeError, from_dict
from escore.upcasting import UpcasterRegistry


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


def build_partition(index: int, count: int, lines: Iterator[bytes], *, require_start: bool, stats: ReadStats,
                    upcaster: UpcasterRegistry, mark: Mapping[str, Any] | None = None) -> Partition:
    """Partition `index` of `count` from its lines: decoded (`mark` merged into each event's metadata),
    de-duplicated by event id, grouped by stream, each stream sorted by version, cut at its first gap
    or at an event that cannot be upcast, and upcast. Problems go to `stats`."""
    # A partition is millions of small acyclic objects built in one go: the cyclic collector
    # would re-scan them again and again as they pile up (the replay ran 2x slower with it).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _build_partition(index, count, lines, require_start, stats, upcaster, mark)
    finally:
        if enabled:
            gc.enable()


def _build_partition(index: int, count: int, lines: Iterator[bytes], require_start: bool, stats: ReadStats,
                     upcaster: UpcasterRegistry, mark: Mapping[str, Any] | None) -> Partition:
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
    upcast = upcaster.upcast
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
