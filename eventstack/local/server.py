"""The HTTP side of the local runtime: API Gateway's REST proxy integration, in front of the API handlers.

Each request becomes the proxy event a REST API sends (eventstack.apigw.rest_event), goes to the
function of the service that owns the route (topology routes), and the handler's proxy result is
written back (eventstack.apigw.parse_proxy_result). Routes of its own: GET /_local/status,
POST /_local/drain?timeout=SECONDS (docs/api.md, "The local runtime's routes"), GET /openapi.json, the OpenAPI document of both
services (eventstack.openapi, the same as docs/openapi.json), and the web UI under /_local/ui (eventstack.local.ui_api).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import quote

from werkzeug.wrappers import Request, Response

from escore.correlation import CORRELATION_HEADER, correlation_id_of
from eventstack.apigw import RouteMatch, match_route, parse_proxy_result, rest_event
from eventstack.local.emulation import QuietRequestHandler
from eventstack.local.ui_api import UI_PATH, UiApi
from eventstack.local.workers import FunctionError, WorkerDied
from eventstack.topology import Route

log = logging.getLogger("eventstack.local")

API_GATEWAY_MAX_BODY = 10 * 1024 * 1024  # API Gateway refuses larger payloads before any Lambda runs
READ_SIZE = 64 * 1024
DEFAULT_DRAIN_TIMEOUT = 30.0
MAX_DRAIN_TIMEOUT = 3600.0
OPENAPI_PATH = "/openapi.json"


def _json(status: int, body: dict[str, Any], headers: Iterable[tuple[str, str]] = ()) -> Response:
    response = Response(json.dumps(body, separators=(",", ":")), status=status, mimetype="application/json")
    for name, value in headers:
        response.headers[name] = value
    return response


def _error(status: int, code: str, message: str, correlation_id: str, **extra: Any) -> Response:
    headers = [(CORRELATION_HEADER, correlation_id)]
    if "allow" in extra:
        headers.append(("Allow", extra.pop("allow")))
    return _json(status, {"error": code, "message": message, **extra}, headers)


class BodyTooLarge(Exception):
    pass


def read_body(request: Request, limit: int) -> bytes:
    """The request body, read `READ_SIZE` at a time and never past `limit` + 1 bytes (BodyTooLarge).

    A chunked body has no Content-Length to check beforehand, so this is where its size is enforced;
    a malformed chunk is OSError (werkzeug's DechunkedInput).
    """
    if (request.content_length or 0) > limit:
        raise BodyTooLarge
    stream = request.stream
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(READ_SIZE, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise BodyTooLarge
    return b"".join(chunks)


# What http.server answers by itself (before any WSGI app runs), as the API's JSON errors.
_PROTOCOL_ERRORS: dict[int, tuple[str, str]] = {
    HTTPStatus.REQUEST_URI_TOO_LONG: ("uri_too_long", "the request target is too long"),
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: ("headers_too_large", "the request headers are too large or too many"),
}


class ApiRequestHandler(QuietRequestHandler):
    """The API's request handler: the errors http.server sends itself (431 for 64 KiB of headers, 414,
    a malformed request line) are JSON with an X-Correlation-Id like every other answer, and a client's
    input never gets a 5xx (an unsupported HTTP version is a 400)."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        status = int(code) if 400 <= code < 500 else int(HTTPStatus.BAD_REQUEST)
        error, text = _PROTOCOL_ERRORS.get(status, ("bad_request", message or "the request is malformed"))
        if status == HTTPStatus.NOT_FOUND:
            error = "not_found"
        body = json.dumps({"error": error, "message": text}, separators=(",", ":")).encode()
        log.debug("answered %d by http.server itself: %s", status, message)
        if self.request_version == "HTTP/0.9":  # not parsed yet (e.g. a bad version): answer in HTTP/1.x
            self.request_version = self.protocol_version
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header(CORRELATION_HEADER, str(uuid.uuid4()))
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class ApiBackend(Protocol):
    """What the API server needs of the runtime behind it (eventstack.local.runtime.LocalRuntime)."""

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        """Invoke the API function `function` with a proxy event; its proxy result (raises if it failed)."""

    def request_done(self) -> None:
        """An API request has ended (it may have appended events: the pollers should look)."""

    def status(self) -> dict[str, Any]:
        """GET /_local/status."""

    def drain(self, timeout: float) -> tuple[bool, dict[str, Any]]:
        """POST /_local/drain: (whether everything was drained within `timeout`, the status)."""


class ApiServer:
    """A WSGI app; `backend` runs the functions and supplies the status and drain."""

    def __init__(self, backend: ApiBackend, routes: dict[tuple[str, str], str]):
        self.backend = backend
        self.routes = [Route(method, resource) for method, resource in routes]
        self.function_of = dict(routes)
        self.in_flight = 0
        self._lock = threading.Lock()
        self.idle = threading.Condition(self._lock)
        self.requests = 0
        self.ui = UiApi(backend.status)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        correlation_id = correlation_id_of(request.headers.get(CORRELATION_HEADER))
        if request.path.startswith("/_local/"):
            response = self.local_route(request, correlation_id)
        elif request.path == OPENAPI_PATH:
            response = self.openapi_route(request, correlation_id)
        else:
            with self._lock:
                self.in_flight += 1
                self.requests += 1
            try:
                response = self.api_route(request, correlation_id)
            finally:
                with self._lock:
                    self.in_flight -= 1
                    self.idle.notify_all()
                self.backend.request_done()  # a command may have appended: wake the pollers
        if CORRELATION_HEADER not in response.headers:  # every answer carries one (docs/api.md)
            response.headers[CORRELATION_HEADER] = correlation_id
        return response(environ, start_response)

    # -- the service API -------------------------------------------------------------------
    def api_route(self, request: Request, correlation_id: str) -> Response:
        raw_uri = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
        if not raw_uri:
            raw_uri = quote(request.path)
            if request.query_string:
                raw_uri += "?" + request.query_string.decode("latin-1")
        found = match_route(self.routes, request.method, raw_uri)
        if not isinstance(found, RouteMatch):
            if found.status == 405:
                return _error(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}",
                              correlation_id, allow=", ".join(found.allowed))
            return _error(404, "not_found", f"no route for {request.path}", correlation_id)
        try:
            body = read_body(request, API_GATEWAY_MAX_BODY)
        except BodyTooLarge:
            return _error(413, "payload_too_large", "the request body is too large", correlation_id)
        except OSError:  # a malformed chunk of a chunked body
            return _error(400, "bad_request", "the request body is not valid chunked encoding", correlation_id)
        function = self.function_of[(self._method_of(request.method, found.resource), found.resource)]
        event = rest_event(
            request.method,
            raw_uri,
            body=body if body else None,
            headers=[(k, v) for k, v in request.headers.items()],
            routes=self.routes,
            stage="local",
            source_ip=request.remote_addr or "127.0.0.1",
        )
        try:
            result = self.backend.invoke(function, event)
            status, headers, data = parse_proxy_result(result)
        except (FunctionError, WorkerDied) as exc:  # in a worker: its traceback, if any, is in the message
            log.error("%s failed on %s %s: %s", function, request.method, request.path, exc)
            return _error(502, "bad_gateway", "Internal server error", correlation_id)
        except Exception:
            log.exception("%s failed on %s %s", function, request.method, request.path)
            # What API Gateway answers when the integration fails.
            return _error(502, "bad_gateway", "Internal server error", correlation_id)
        response = Response(data, status=status)
        response.headers.clear()
        for name, value in headers.pairs():
            response.headers.add(name, value)
        if CORRELATION_HEADER.lower() not in {name.lower() for name, _ in headers.pairs()}:
            response.headers[CORRELATION_HEADER] = correlation_id
        return response

    def _method_of(self, method: str, resource: str) -> str:
        method = method.upper()
        return method if (method, resource) in self.function_of else "ANY"

    # -- the runtime's own routes -------------------------------------------------------------
    def openapi_route(self, request: Request, correlation_id: str) -> Response:
        if request.method != "GET":
            return _error(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}",
                          correlation_id, allow="GET")
        from eventstack.openapi import document_text

        return Response(document_text(), status=200, mimetype="application/json")

    def local_route(self, request: Request, correlation_id: str) -> Response:
        if request.path == UI_PATH or request.path.startswith(UI_PATH + "/"):
            return self.ui(request)
        if request.path == "/_local/status":
            if request.method != "GET":
                return _error(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}",
                              correlation_id, allow="GET")
            return _json(200, self.backend.status())
        if request.path == "/_local/drain":
            if request.method != "POST":
                return _error(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}",
                              correlation_id, allow="POST")
            raw = request.args.get("timeout", str(DEFAULT_DRAIN_TIMEOUT))
            try:
                timeout = float(raw)
                if not 0 <= timeout <= MAX_DRAIN_TIMEOUT:
                    raise ValueError
            except ValueError:
                return _error(422, "validation_error", f"timeout must be seconds between 0 and {MAX_DRAIN_TIMEOUT:.0f}",
                              correlation_id, detail=[{"loc": ["query", "timeout"], "msg": "not a number of seconds"}])
            drained, status = self.backend.drain(timeout)
            if drained:
                return _json(200, status)
            return _json(504, {"error": "drain_timeout",
                               "message": f"still pending after {timeout:g} s", "status": status})
        return _error(404, "not_found", f"no route for {request.path}", correlation_id)

    def wait_idle(self, timeout: float) -> bool:
        with self._lock:
            return self.idle.wait_for(lambda: self.in_flight == 0, timeout)
