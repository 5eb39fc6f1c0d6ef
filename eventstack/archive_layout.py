"""Where the archive's objects live and how their keys are laid out (docs/api.md, "The archive").

Keys: `events/service=<s>/year=YYYY/month=MM/day=DD/hour=HH/<delivery-stream>-<...>.gz`, the hour
being when Firehose *delivered* the object (not when its events occurred). An `ObjectSource` lists
and opens objects: S3 in production (`S3Source`), a directory for the benchmark (`DirectorySource`).

`listing_prefixes` prunes a listing by that layout: one LIST per hour prefix for short ranges, per
day prefix for longer ones (hours filtered from the keys), the service prefix only when no `since`
is given; `list_objects` is the listing itself, filtered to the window.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Protocol

HOUR = timedelta(hours=1)
DAY_LISTING_ABOVE_HOURS = 48  # longer ranges list per day prefix
KEY_RE = re.compile(
    r"service=(?P<service>[^/]+)/year=(?P<y>\d{4})/month=(?P<m>\d{2})/day=(?P<d>\d{2})/hour=(?P<h>\d{2})/"
)


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


def listing_prefixes(service: str, since: datetime | None, until: datetime | None, root: str = "events/") -> list[str]:
    """The LIST prefixes that cover [since, until) for a service."""
    if since is None:
        return [service_prefix(service, root)]
    start = floor_hour(since)
    end = floor_hour(until) + HOUR if until else floor_hour(datetime.now(UTC)) + HOUR
    hours = int((end - start) / HOUR)
    if hours <= DAY_LISTING_ABOVE_HOURS:
        return [hour_prefix(service, start + i * HOUR, root) for i in range(max(hours, 0))]
    days: list[str] = []
    day = start.replace(hour=0)
    while day < end:
        days.append(day_prefix(service, day, root))
        day += timedelta(days=1)
    return days


def list_objects(source: ObjectSource, service: str, since: datetime | None = None, until: datetime | None = None,
                 *, max_key: str | None = None, root: str = "events/") -> list[ArchiveObject]:
    """The service's objects whose delivery hour is in [floor_hour(since), until), by key.

    `until` is exclusive at hour granularity: an object delivered in until's hour is read only
    when until is not on the hour. `max_key` drops keys after it (a resumed replay reads the
    objects its first run listed, not those delivered since).
    """
    first = floor_hour(since) if since else None
    out: list[ArchiveObject] = []
    for prefix in listing_prefixes(service, since, until, root):
        for key, size in source.list(prefix):
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
