"""`archive verify`: does the archive hold every event of a service's event store, once?

Counts, by `event_id`:
- missing: in the event store, in no archive object (an object lost or deleted, a delivery failed);
- duplicated: extra copies in the archive (at-least-once delivery; harmless, replay drops them);
- unexpected: in the archive, not in the store (events of another service, or a store that lost data).

An object that is not gzip, is truncated or cannot be read is named and counted (`bad_objects`) and
the others are read all the same; the lines it gave before the damage count as archived.

Events the store appended in the last `grace` seconds are not counted missing (Firehose buffers for
up to its interval before writing): they are reported as `recent`. Memory: one entry per event id of
the store and one counter per archived id (about 150 bytes each); a store of tens of millions of
events wants a machine with a few GB, or `--since` to check a window.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from escore.envelope import Envelope, parse_timestamp
from eventstack.archive import ArchiveReader
from eventstack.archive_layout import ArchiveError, ArchiveObject


@dataclass
class VerifyResult:
    service: str
    stored: int = 0
    archived_lines: int = 0
    objects: int = 0
    missing: int = 0
    duplicated: int = 0
    unexpected: int = 0
    recent: int = 0
    bad_lines: int = 0
    bad_objects: list[tuple[str, str]] = field(default_factory=list)  # (key, why): not gzip, truncated, unreadable
    missing_samples: list[str] = field(default_factory=list)  # "stream_id vN (event_id)"

    @property
    def ok(self) -> bool:
        return self.missing == 0 and not self.bad_objects

    @property
    def exit_code(self) -> int:
        """0: every stored event archived; 1: events missing; 3: an object could not be read (its
        events may be counted missing too: the line says how many)."""
        return 3 if self.bad_objects else 1 if self.missing else 0


def verify(
    service: str,
    store_events: Iterable[Envelope],
    reader: ArchiveReader,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    grace: float = 0.0,
    now: datetime | None = None,
) -> VerifyResult:
    result = VerifyResult(service)
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=grace)
    stored: dict[str, tuple[str, int]] = {}
    recent: set[str] = set()
    for event in store_events:
        moment = parse_timestamp(event.occurred_at)
        if since is not None and moment < since:
            continue
        if until is not None and moment >= until:
            continue
        result.stored += 1
        if grace and moment > cutoff:
            recent.add(event.event_id)
        stored[event.event_id] = (event.stream_id, event.version)

    # Delivery follows occurrence, possibly much later: only the lower bound prunes the listing.
    objects = reader.list(service, since, None)
    result.objects = len(objects)
    counts: Counter[str] = Counter()
    for key, ids, bad, error in _archived_ids(reader, objects):
        counts.update(ids)  # a damaged object's lines before the damage are archived all the same
        result.bad_lines += bad
        if error is not None:
            result.bad_objects.append((key, error))
    result.archived_lines = sum(counts.values())
    for event_id, (stream_id, version) in stored.items():
        if event_id not in counts:
            if event_id in recent:
                result.recent += 1
                continue
            result.missing += 1
            if len(result.missing_samples) < 10:
                result.missing_samples.append(f"{stream_id} v{version} ({event_id})")
    for event_id, count in counts.items():
        if event_id in stored:
            result.duplicated += count - 1
        elif since is None and until is None:
            result.unexpected += count
    return result


def _archived_ids(reader: ArchiveReader,
                  objects: Sequence[ArchiveObject]) -> Iterable[tuple[str, list[str], int, str | None]]:
    """Per object: its key, the event ids of its lines, how many lines are not envelopes, and why it
    could not be read to its end (None if it could)."""

    def ids_of(obj: ArchiveObject) -> tuple[str, list[str], int, str | None]:
        ids: list[str] = []
        bad = 0
        try:
            for line in reader.iter_lines(obj.key):
                try:
                    raw = orjson.loads(line)
                    ids.append(str(raw["event_id"]))
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    bad += 1
        except (ArchiveError, zlib.error, OSError, BotoCoreError, ClientError) as exc:
            return obj.key, ids, bad, _why(exc)
        return obj.key, ids, bad, None

    with ThreadPoolExecutor(max_workers=reader.workers) as pool:
        yield from pool.map(ids_of, objects)


def _why(exc: Exception) -> str:
    if isinstance(exc, zlib.error):
        return f"not gzip ({exc})"
    if isinstance(exc, ArchiveError):
        return str(exc)  # "truncated gzip stream"
    return f"unreadable ({type(exc).__name__}: {exc})"
