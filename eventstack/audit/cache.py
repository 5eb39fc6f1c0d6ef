"""A local copy of the archive's objects for the DuckDB engine, kept in step with the bucket by ETag.

DuckDB's S3 extension is downloaded at run time (not always reachable), so the objects are copied
with boto3 instead: `sync` lists `events/`, downloads only objects that are new or whose ETag
changed (concurrently), drops the copies of objects deleted from the bucket, and keeps a manifest
(`manifest.json`: key, etag, size, last_modified, and what the DuckDB engine learnt when it first read
the copy: lines, undecodable lines, or why it cannot be read). Copies live under `objects/<key>`, so
the key's `service=/year=/.../hour=` folders are the hive partitions DuckDB reads; the engine's
Parquet copy of each under `columnar/<key>.parquet` (made once per ETag, dropped with the object).

Default place: `$XDG_CACHE_HOME/eventstack/<endpoint-or-account>/<bucket>` (~/.cache when unset).
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ARCHIVE_PREFIX = "events/"
DOWNLOAD_WORKERS = 8
PROGRESS_EVERY = 1.0  # seconds between progress lines while downloading
Progress = Callable[[str], None]


@dataclass
class CachedObject:
    key: str
    etag: str
    size: int
    last_modified: str  # RFC 3339, UTC
    lines: int | None = None  # filled by the engine the first time it reads the copy
    bad_lines: int | None = None
    unreadable: str | None = None  # why the copy cannot be read (not gzip, truncated): left out of queries


@dataclass
class SyncStats:
    listed: int = 0
    downloaded: int = 0
    deleted: int = 0
    bytes: int = 0
    seconds: float = 0.0
    downloaded_keys: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"synced {self.listed} archive objects: {self.downloaded} new or changed "
                f"({self.bytes / 1e6:.1f} MB), {self.deleted} deleted, in {self.seconds:.1f} s")


def default_root(bucket: str, place: str) -> Path:
    """The cache folder of `bucket` as seen from `place` (an endpoint's host and port, or an account)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "eventstack" / _safe(place) / _safe(bucket)


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", part).strip("-") or "default"


class ArchiveCache:
    """The cache folder `root`: `manifest.json` and `objects/<key>`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.manifest_path = self.root / "manifest.json"
        self.objects_dir = self.root / "objects"
        self.columnar_dir = self.root / "columnar"
        self.entries: dict[str, CachedObject] = self._load()

    def _load(self) -> dict[str, CachedObject]:
        if not self.manifest_path.is_file():
            return {}
        try:
            raw = orjson.loads(self.manifest_path.read_bytes())
            return {item["key"]: CachedObject(**item) for item in raw["objects"]}
        except (orjson.JSONDecodeError, KeyError, TypeError):  # a damaged manifest: start again
            return {}

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        body = orjson.dumps({"objects": [asdict(e) for e in sorted(self.entries.values(), key=lambda e: e.key)]})
        with tempfile.NamedTemporaryFile(dir=self.root, delete=False, suffix=".tmp") as out:
            out.write(body)
        os.replace(out.name, self.manifest_path)

    def path(self, key: str) -> Path:
        return self.objects_dir / key

    def columnar_path(self, key: str) -> Path:
        """Where the engine keeps its Parquet copy of `key`'s lines (made from the object's copy)."""
        return self.columnar_dir / f"{key}.parquet"

    def objects(self) -> list[CachedObject]:
        return sorted(self.entries.values(), key=lambda e: e.key)

    def sync(self, s3: Any, bucket: str, *, prefix: str = ARCHIVE_PREFIX, workers: int = DOWNLOAD_WORKERS,
             progress: Progress | None = None) -> SyncStats:
        """Bring the cache in step with `bucket`'s objects under `prefix` (see the module's docstring)."""
        started = time.monotonic()
        stats = SyncStats()
        listed: dict[str, CachedObject] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if item["Key"].endswith("/"):
                    continue
                modified = item["LastModified"].astimezone(UTC).isoformat().replace("+00:00", "Z")
                listed[item["Key"]] = CachedObject(item["Key"], str(item["ETag"]).strip('"'), int(item["Size"]), modified)
        stats.listed = len(listed)
        for key in [k for k in self.entries if k not in listed]:
            self.path(key).unlink(missing_ok=True)
            self.columnar_path(key).unlink(missing_ok=True)
            del self.entries[key]
            stats.deleted += 1
        wanted = [o for key, o in listed.items() if not self._current(key, o)]
        lock = threading.Lock()
        last = [time.monotonic()]

        def fetch(entry: CachedObject) -> None:
            target = self.path(entry.key)
            target.parent.mkdir(parents=True, exist_ok=True)
            body = s3.get_object(Bucket=bucket, Key=entry.key)["Body"]
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as out:
                for chunk in iter(lambda: body.read(1 << 20), b""):
                    out.write(chunk)
            os.replace(out.name, target)
            with lock:
                self.entries[entry.key] = entry
                stats.downloaded += 1
                stats.bytes += entry.size
                stats.downloaded_keys.append(entry.key)
                if progress and time.monotonic() - last[0] >= PROGRESS_EVERY:
                    last[0] = time.monotonic()
                    progress(f"downloading archive objects: {stats.downloaded}/{len(wanted)}")

        try:
            if wanted:
                with ThreadPoolExecutor(max_workers=max(1, min(workers, len(wanted)))) as pool:
                    for done in [pool.submit(fetch, entry) for entry in wanted]:
                        done.result()
        finally:
            self.save()  # what was downloaded stays known, even when a download failed
        stats.seconds = time.monotonic() - started
        if progress:
            progress(stats.line())
        return stats

    def _current(self, key: str, listed: CachedObject) -> bool:
        known = self.entries.get(key)
        return known is not None and known.etag == listed.etag and self.path(key).is_file()

    def record(self, key: str, *, lines: int | None = None, bad_lines: int | None = None,
               unreadable: str | None = None) -> None:
        """Keep what reading the copy of `key` found (saved by the next `save`)."""
        entry = self.entries[key]
        entry.lines, entry.bad_lines, entry.unreadable = lines, bad_lines, unreadable


def rfc3339_to_naive_utc(text: str) -> datetime:
    """A manifest time as DuckDB's TIMESTAMP wants it (naive, UTC)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)
