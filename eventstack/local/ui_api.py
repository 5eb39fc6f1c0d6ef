"""The local web UI: its static page (GET /_local/ui, /_local/ui/<asset>) and the JSON it reads.

The page is plain HTML, CSS and one JavaScript module in eventstack/local/ui/, served from a fixed list
(anything else, a traversal included, is a 404 JSON answer: no path from the request ever reaches the
file system). The JSON, under /_local/ui/api/ (docs/local.md, "The web UI"):

- `overview?limit=N`: every service of the topology, its event store table, its Kinesis stream, its
  projections, how many events its store holds and its latest N events (default 20, 1 to 200) with their
  correlation and causation ids. The store is read with a Scan (it has no index by time): fine for the
  local runtime's in-memory tables, bounded by MAX_SCAN_ITEMS.
- `archive`: the archive bucket's objects (key, size, last modified, service, delivery hour), newest
  first, at most MAX_ARCHIVE_OBJECTS.
- `trace/<correlation id>`: eventstack.audit.trace.trace (the one implementation of a trace, the same
  as `eventstack trace`) over the archive, through the DuckDB engine on a cache of this runtime's own,
  and the event stores: its Trace.to_json(), with its figures (`stats`), `archive_searched` and
  `archive_error` (why the archive could not be read, when it could not: the stores' trace is still
  answered).

The mappings' pending and DLQ counts come from GET /_local/status, which the page reads itself.
A bad input (a correlation id outside the API's rule, a bad limit) is a 4xx JSON error; an emulation
that does not answer is a 503 JSON error, never a traceback.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from werkzeug.wrappers import Request, Response

from escore.correlation import correlation_id_of
from escore.dynamodb_store import EVENT_KIND
from escore.envelope import EnvelopeError, decode
from eventstack.archive_layout import key_hour
from eventstack.audit.cache import ArchiveCache
from eventstack.audit.duckdb_engine import DuckDBEngine
from eventstack.audit.live import StoreUnavailable
from eventstack.audit.trace import ArchiveUnavailable, trace
from eventstack.local.emulation import make_client
from eventstack.resources import Resources, from_local_status
from eventstack.topology import TOPOLOGY

log = logging.getLogger("eventstack.local")

UI_PATH = "/_local/ui"
API_PATH = UI_PATH + "/api/"
UI_DIR = Path(__file__).resolve().parent / "ui"
# The only files served: name -> content type. A fixed list, so no request path is ever joined to a directory.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The page loads only its own files and JSON (the icon is an inline empty data: URL).
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                           "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
DEFAULT_LATEST = 20
MAX_LATEST = 200
MAX_SCAN_ITEMS = 50_000  # per event store: past this the overview says `truncated`
MAX_ARCHIVE_OBJECTS = 500
# Quick failure when the emulation stalls: the page asks again on its next refresh.
CLIENT_CONFIG = Config(retries={"total_max_attempts": 2, "mode": "standard"}, connect_timeout=2, read_timeout=10,
                       max_pool_connections=8, account_id_endpoint_mode="disabled")

StatusFn = Callable[[], dict[str, Any]]


class UiError(Exception):
    """An answer other than 200: status, error code, message."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def _json(status: int, body: Any) -> Response:
    response = Response(json.dumps(body, separators=(",", ":"), default=str), status=status,
                        mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


class UiApi:
    """The UI's routes; `status` is the runtime's GET /_local/status (its names and the emulation's URL)."""

    def __init__(self, status: StatusFn) -> None:
        self._status = status
        self._lock = threading.RLock()  # client() takes it, then resources() again
        self._resources: Resources | None = None
        self._clients: dict[str, Any] = {}
        self._trace_lock = threading.Lock()
        # The DuckDB engine's copy of the archive, for this runtime's life (removed when it exits).
        self._cache: tempfile.TemporaryDirectory[str] | None = None  # made at the first trace

    def __call__(self, request: Request) -> Response:
        try:
            if request.method not in ("GET", "HEAD"):
                raise UiError(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}",
                              allow="GET, HEAD")
            path = request.path
            if path.startswith(API_PATH):
                return _json(200, self._api(path.removeprefix(API_PATH), request))
            if path in (UI_PATH, UI_PATH + "/"):
                return self._asset("index.html")
            return self._asset(path.removeprefix(UI_PATH + "/"))
        except UiError as exc:
            response = _json(exc.status, {"error": exc.code, "message": exc.message,
                                          **{k: v for k, v in exc.extra.items() if k != "allow"}})
            if "allow" in exc.extra:
                response.headers["Allow"] = exc.extra["allow"]
            return response

    # -- the page's files --------------------------------------------------------------------
    def _asset(self, name: str) -> Response:
        content_type = ASSETS.get(name)
        if content_type is None:
            raise UiError(404, "not_found", f"no UI file {name!r}")
        response = Response((UI_DIR / name).read_bytes(), status=200, content_type=content_type)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    # -- the JSON ------------------------------------------------------------------------------
    def _api(self, route: str, request: Request) -> dict[str, Any]:
        if route == "overview":
            return self.overview(_limit(request.args.get("limit")))
        if route == "archive":
            return self.archive()
        if route.startswith("trace/"):
            return self.trace(_correlation_id(route.removeprefix("trace/")))
        if route == "trace":
            raise UiError(400, "validation_error", "a correlation id is required: /_local/ui/api/trace/<id>")
        raise UiError(404, "not_found", f"no UI route {API_PATH}{route}")

    def resources(self) -> Resources:
        """The runtime's names, read from its status once (they never change while it runs)."""
        with self._lock:
            if self._resources is None:
                self._resources = from_local_status(self._status())
            return self._resources

    def client(self, name: str) -> Any:
        with self._lock:
            if name not in self._clients:
                status = self.resources().local_status or {}
                self._clients[name] = make_client(name, str(status["aws_endpoint_url"]), CLIENT_CONFIG)
            return self._clients[name]

    def overview(self, limit: int) -> dict[str, Any]:
        resources = self.resources()
        services = []
        for service in TOPOLOGY.services:
            table = resources.event_store_table(service.name)
            count, latest, truncated = self._latest_events(table, limit)
            services.append({
                "name": service.name,
                "event_store": table,
                "stream": resources.streams.get(service.name),
                "projections": [{"name": p.name, "table": resources.tables.get(p.table.logical_name),
                                 "sources": list(p.sources)} for p in service.projections],
                "events": count,
                "truncated": truncated,
                "latest": latest,
            })
        return {"stage": resources.stage, "limit": limit, "services": services}

    def _latest_events(self, table: str, limit: int) -> tuple[int, list[dict[str, Any]], bool]:
        """(events in the store, the newest `limit` of them, whether the scan stopped at MAX_SCAN_ITEMS)."""
        request: dict[str, Any] = {
            "TableName": table,
            "FilterExpression": "#kind = :event",
            "ProjectionExpression": "#envelope",
            "ExpressionAttributeNames": {"#kind": "kind", "#envelope": "envelope"},
            "ExpressionAttributeValues": {":event": {"S": EVENT_KIND}},
        }
        events: list[dict[str, Any]] = []
        scanned = 0
        with _unavailable(f"the event store {table}"):
            while True:
                page = self.client("dynamodb").scan(**request)
                scanned += int(page.get("ScannedCount", 0))
                for item in page.get("Items", []):
                    try:
                        envelope = decode(item["envelope"]["S"])
                    except (EnvelopeError, KeyError):
                        continue  # not an envelope: `eventstack archive verify` reports those
                    events.append({
                        "event_id": envelope.event_id, "stream_id": envelope.stream_id,
                        "version": envelope.version, "type": envelope.type, "occurred_at": envelope.occurred_at,
                        "correlation_id": envelope.correlation_id,
                        "causation_id": envelope.metadata.get("causation_id"),
                    })
                if "LastEvaluatedKey" not in page or scanned >= MAX_SCAN_ITEMS:
                    break
                request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        events.sort(key=lambda e: (e["occurred_at"], e["stream_id"], e["version"]), reverse=True)
        return len(events), events[:limit], "LastEvaluatedKey" in page

    def archive(self) -> dict[str, Any]:
        resources = self.resources()
        bucket = resources.archive_bucket
        objects: list[dict[str, Any]] = []
        with _unavailable(f"the archive bucket {bucket}"):
            for page in self.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for item in page.get("Contents", []):
                    key = str(item["Key"])
                    parsed = key_hour(key)
                    objects.append({
                        "key": key,
                        "size": int(item["Size"]),
                        "last_modified": item["LastModified"].astimezone(UTC).isoformat().replace("+00:00", "Z"),
                        "service": parsed[0] if parsed else None,
                        "hour": parsed[1].strftime("%Y-%m-%dT%H:00Z") if parsed else None,
                        "kind": key.split("/", 1)[0],  # events, or errors (records Firehose could not partition)
                    })
        objects.sort(key=lambda o: (o["last_modified"], o["key"]), reverse=True)
        return {
            "bucket": bucket,
            "count": len(objects),
            "bytes": sum(o["size"] for o in objects),
            "truncated": len(objects) > MAX_ARCHIVE_OBJECTS,
            "objects": objects[:MAX_ARCHIVE_OBJECTS],
        }

    def trace(self, correlation_id: str) -> dict[str, Any]:
        """eventstack.audit.trace.trace over the archive (the DuckDB engine, its cache synced with the bucket
        at each trace: only new objects are downloaded) and the event stores. If the archive cannot be
        read, the stores' trace alone, with `archive_error` saying why."""
        resources = self.resources()
        dynamodb = self.client("dynamodb")
        archive_error = None
        with self._trace_lock:  # one trace at a time: they share the cache's folder and manifest
            if self._cache is None:
                self._cache = tempfile.TemporaryDirectory(prefix="eventstack-ui-archive-")
            engine = DuckDBEngine(ArchiveCache(self._cache.name), s3=self.client("s3"), bucket=resources.archive_bucket)
            try:
                try:
                    found = trace(correlation_id, engine=engine, dynamodb=dynamodb, resources=resources)
                except ArchiveUnavailable as exc:
                    archive_error = str(exc)
                    found = trace(correlation_id, engine=None, dynamodb=dynamodb, resources=resources)
            except StoreUnavailable as exc:
                raise UiError(503, "store_unavailable", str(exc)) from None
            except (BotoCoreError, ClientError) as exc:
                raise UiError(503, "store_unavailable", f"the event stores cannot be read: {exc}") from None
            finally:
                engine.close()
        return {**found.to_json(), "stats": found.stats, "archive_searched": archive_error is None,
                "archive_error": archive_error}


@contextmanager
def _unavailable(what: str) -> Iterator[None]:
    """The emulation's failure to answer, as a 503 naming what could not be read."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise UiError(503, "emulation_unavailable", f"{what} cannot be read: {exc}") from None


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LATEST
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LATEST:
        raise UiError(422, "validation_error", f"limit must be a whole number from 1 to {MAX_LATEST}",
                      detail=[{"loc": ["query", "limit"], "msg": "not a number from 1 to 200"}])
    return value


def _correlation_id(raw: str) -> str:
    """The id as the API keeps it (escore.correlation: printable ASCII, 1 to 200 characters), else 400."""
    if not raw or correlation_id_of(raw) != raw:
        raise UiError(400, "validation_error",
                      "a correlation id is printable ASCII of 1 to 200 characters, with no leading or trailing space",
                      detail=[{"loc": ["path", "correlation_id"], "msg": "not a correlation id"}])
    return raw
