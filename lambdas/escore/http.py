"""The REST plumbing both service APIs share (CONTRACT §3), on Powertools' APIGatewayRestResolver.

A `JsonApi` is one API Gateway REST API's Lambda handler. Routes are plain functions taking
pydantic models (validated by Powertools' `enable_validation`) and returning a JSON object.
Around them this module guarantees, for every request:

1. the route: 404 `not_found` for an unknown path, 405 `method_not_allowed` (with `Allow`) for
   a known path and another method. Powertools answers 404 to both, so routes are matched here,
   before Powertools sees the event;
2. the request itself, in this order: 413 `payload_too_large` (body over 64 KiB, after base64
   decoding), 400 `bad_request` (wrong content type, empty or malformed JSON, a byte order mark, a
   number no double or 4000 digits can hold, a JSON value that is not an object), 422
   `validation_error` (pydantic, unknown fields included; a string with an unpaired surrogate; bad
   query parameters, an integer one being ASCII digits only; a bad Idempotency-Key). A GET or
   DELETE ignores any body. Integers in a body are exact at any size (2**64 and 10**40 are
   integers, not floats), so a huge `expected_version` is a plain 409;
3. the resource's state: domain errors mapped to 404 / 409 (`conflict` with `current_version`,
   `<scope>_taken` for a uniqueness claim). A path parameter the router cannot carry as it is
   (`#`, a control character, ...) is passed percent-encoded, so it reaches the route, and a
   malformed id is an unknown resource: 404 after the request checks, like a well-formed unknown id;
4. never a 5xx for a client's input; any unexpected exception is logged and answered
   500 `internal_error` with no internals;
5. `X-Correlation-Id` on every response (the request's, or a new UUID), also put in the
   `CommandContext` whose metadata the events carry;
6. idempotency for POST/PATCH/DELETE with an `Idempotency-Key` header: the key is scoped to
   method and path, the request hash is the canonical JSON of the body (and query parameters),
   a completed 2xx answer is returned again with nothing appended, another body is 409
   `idempotency_key_reused`, a request still running is 409 `idempotency_in_progress`, a non-2xx
   answer frees the key. The answer is stored by the repository in the same atomic append as the
   events (see escore.aggregate.Repository.save), so a crash can never leave events without it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import threading
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import orjson
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Query
from botocore.exceptions import ClientError as BotoClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import HTTPClientError as BotoHTTPClientError

from escore.aggregate import AggregateNotFound, CommandContext, VersionConflict
from escore.observability import count, logger
from escore.store import (
    ClaimTaken,
    ConcurrencyError,
    EventStore,
    IdempotencyCompletion,
    IdempotencyInProgress,
    IdempotencyKey,
    IdempotencyKeyReused,
    IdempotencyRecord,
    TooLarge,
)

MAX_BODY_BYTES = 64 * 1024
CORRELATION_HEADER = "X-Correlation-Id"
IDEMPOTENCY_HEADER = "Idempotency-Key"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
IDEMPOTENT_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PRINTABLE = re.compile(r"^[\x20-\x7e]{1,200}$")
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_DIGITS = re.compile(r"[0-9]+")  # an integer parameter: ASCII digits only (no sign, space, "_", "." or "e")
_BOM = b"\xef\xbb\xbf"
MAX_INT_DIGITS = 4000  # a JSON integer longer than this is refused (400): Python prints up to 4300 digits
# What Powertools' router takes in a path parameter (its _SAFE_URI, _UNSAFE_URI and \w); anything else
# is percent-encoded before routing, so the route (not a "no such route") judges the value.
_UNROUTABLE = re.compile(r"[^-._~()'!*:@,;=+&$%<> \[\]{}|^\w]")

# Powertools keeps the current event on the resolver *class* (BaseRouter.current_event), so two
# requests resolved at once in one process (the local runtime's threads) would see each other's
# event. On Lambda one process serves one request at a time and this lock is never contended.
_RESOLVE_LOCK = threading.RLock()

RouteFunction = TypeVar("RouteFunction", bound=Callable[..., Any])


RETRY_AFTER_SECONDS = 2  # what a 503 asks a client to wait before retrying
# Codes an AWS service answers when it is overloaded or failing, not because of the request: still
# there after botocore's retries, they are a 503 like a timeout.
_UNAVAILABLE_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "Throttling", "RequestLimitExceeded",
    "InternalServerError", "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException",
})


class HttpError(Exception):
    """An error answer: `{"error": code, "message": message, **extra}` with `status` (and `headers`)."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra
        super().__init__(message)


def is_unavailable(exc: BaseException) -> bool:
    """A dependency that did not answer in time, could not be reached, or said it is overloaded."""
    if isinstance(exc, BotoConnectionError | BotoHTTPClientError):  # timeouts, refused or dropped
        return True
    if isinstance(exc, BotoClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) in _UNAVAILABLE_CODES
    return False


def validation_error(detail: Sequence[Mapping[str, Any]], message: str | None = None) -> HttpError:
    """A 422 naming the fields at fault, e.g. `[{"loc": ["query", "cursor"], "type": ..., "msg": ...}]`."""
    fields = ", ".join(".".join(str(part) for part in item.get("loc", ())) for item in detail)
    return HttpError(
        422, "validation_error", message or f"invalid request: {fields}", detail=[dict(d) for d in detail]
    )


def json_response(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A proxy integration result with a JSON body."""
    multi = {"Content-Type": [content_types.APPLICATION_JSON]}
    for name, value in (headers or {}).items():
        multi[name] = [value]
    return {
        "statusCode": status,
        "multiValueHeaders": multi,
        "body": orjson.dumps(body).decode(),
        "isBase64Encoded": False,
    }


def error_parts(error: HttpError) -> tuple[dict[str, Any], dict[str, str] | None]:
    """(body, headers) of an error answer; a 405's `allow` becomes the Allow header."""
    extra = dict(error.extra)
    headers = dict(error.headers)
    if "allow" in extra:
        headers["Allow"] = str(extra.pop("allow"))
    return {"error": error.code, "message": error.message, **extra}, headers or None


def request_hash(body: Any, query: Mapping[str, Any] | None = None) -> str:
    """Equal JSON, equal hash: keys sorted, no whitespace."""
    value = {"body": body, "query": dict(query or {})}
    try:
        canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # what orjson cannot write (an integer over 64 bits, deep nesting): the same JSON
        canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(canonical).hexdigest()


class _OutOfRange(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 is JSON, but no double holds it
        raise _OutOfRange(text)
    return value


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS + 1:
        raise _OutOfRange(text)
    return int(text)


def _no_constant(constant: str) -> Any:
    raise ValueError(constant)  # NaN and Infinity are not JSON


def parse_json_body(raw: bytes) -> Any:
    """The JSON value of a body, or HttpError 400 (and 422 for a string no store can hold).

    Stricter than json.loads where JSON is (RFC 8259): no byte order mark, no NaN or Infinity; and
    exact: integers stay integers at any size (orjson would read 10**40 as a float), a float that
    overflows a double is refused rather than read as infinity.
    """
    if raw.startswith(_BOM):
        raise HttpError(400, "bad_request", "the body starts with a byte order mark (U+FEFF): send JSON without one")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HttpError(400, "bad_request", "the body is not UTF-8") from exc
    try:
        value = json.loads(text, parse_float=_finite_float, parse_int=_bounded_int, parse_constant=_no_constant)
    except _OutOfRange as exc:
        raise HttpError(400, "bad_request", "the body holds a number out of range") from exc
    except (ValueError, RecursionError) as exc:
        raise HttpError(400, "bad_request", "the body is not valid JSON") from exc
    where = _unpaired_surrogate(value)
    if where is not None:
        raise validation_error(
            [{"loc": ["body", *where], "type": "unsupported_value", "msg": "a string holds an unpaired surrogate"}]
        )
    return value


def _unpaired_surrogate(value: Any) -> list[str | int] | None:
    """Where a string (key or value) holds a lone surrogate, which UTF-8 and so no store can hold."""
    pending: list[tuple[list[str | int], Any]] = [([], value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return path
        elif isinstance(item, dict):
            for key, inner in item.items():
                try:
                    key.encode("utf-8")
                except UnicodeEncodeError:
                    return [*path, key.encode("utf-8", "backslashreplace").decode("ascii")]
                pending.append(([*path, key], inner))
        elif isinstance(item, list):
            pending.extend(([*path, index], inner) for index, inner in enumerate(item))
    return None


def _routable(path: str) -> str:
    """`path` with what Powertools' router cannot match in a segment percent-encoded (as UTF-8)."""
    def encode(match: re.Match[str]) -> str:
        return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8", "surrogatepass"))

    return "/".join(_UNROUTABLE.sub(encode, segment) for segment in path.split("/"))


def integer_query_parameters(fn: Callable[..., Any]) -> frozenset[str]:
    """The query parameters `fn` declares as integers (`Annotated[int | None, Query(...)]`)."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # an annotation this cannot resolve: Powertools' own parsing still applies
        return frozenset()
    names: set[str] = set()
    for name, hint in hints.items():
        if get_origin(hint) is not Annotated:
            continue
        base, *extras = get_args(hint)
        query = next((extra for extra in extras if isinstance(extra, Query)), None)
        if query is None:
            continue
        options = get_args(base) if get_origin(base) in (Union, types.UnionType) else (base,)
        if int in options:
            names.add(query.alias or name)
    return frozenset(names)


@dataclass(frozen=True)
class RouteSpec:
    method: str
    template: str  # API Gateway form, "/posts/{post_id}"
    status: int  # the success status of the route
    has_body: bool
    integer_queries: frozenset[str] = frozenset()  # query parameters that are integers: digits only

    def match(self, path: str) -> dict[str, str] | None:
        wanted = [s for s in self.template.split("/") if s]
        given = [s for s in path.split("/") if s]
        if len(wanted) != len(given):
            return None
        params: dict[str, str] = {}
        for part, value in zip(wanted, given, strict=True):
            if part.startswith("{") and part.endswith("}"):
                params[part[1:-1]] = value
            elif part != value:
                return None
        return params

    @property
    def literal_rank(self) -> tuple[int, ...]:
        return tuple(0 if s.startswith("{") else 1 for s in self.template.split("/") if s)


@dataclass
class RequestScope:
    """What the plumbing knows of the request being handled."""

    method: str
    path: str
    correlation_id: str
    command: CommandContext
    route: RouteSpec | None = None
    body: Any = None
    query: dict[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None


_current: ContextVar[RequestScope | None] = ContextVar("escore_http_request", default=None)


def _header(event: Mapping[str, Any], name: str) -> str | None:
    wanted = name.lower()
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == wanted and value is not None:
            return str(value)
    for key, values in (event.get("multiValueHeaders") or {}).items():
        if key.lower() == wanted and values:
            return str(values[-1])
    return None


def _normal_path(path: str) -> str:
    """`/posts/` and `//posts` are `/posts`, as API Gateway routes them."""
    return "/" + "/".join(segment for segment in path.split("/") if segment)


def _without_header(headers: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    return {key: value for key, value in (headers or {}).items() if key.lower() != name.lower()}


class JsonApi:
    """One REST API: routes registered with `get/post/patch/delete`, called as a Lambda handler.

    `store` holds the idempotency records (the service's event store, so an answer and its
    events are written in one transaction); without a store, Idempotency-Key is ignored.
    """

    def __init__(self, service: str, store: EventStore | None = None, *, max_body: int = MAX_BODY_BYTES) -> None:
        self.service = service
        self.store = store
        self.max_body = max_body
        self.routes: list[RouteSpec] = []
        self.app = APIGatewayRestResolver(
            enable_validation=True,
            serializer=lambda obj: orjson.dumps(obj).decode(),
            json_body_deserializer=json.loads,  # the body _precheck wrote: exact integers of any size
        )
        self.app.use(middlewares=[self._around_route])
        self.app.exception_handler(Exception)(self._on_exception)
        self.app.exception_handler(RequestValidationError)(self._on_validation_error)
        self.app.not_found(self._on_not_found)

    # registration
    def route(self, method: str, template: str, *, status: int = 200) -> Callable[[RouteFunction], RouteFunction]:
        """Register `fn` for `method template` (API Gateway syntax, `/posts/{post_id}`).

        `fn` returns a JSON object, answered with `status` (e.g. 201 for a create).
        """
        method = method.upper()
        powertools_rule = re.sub(r"\{(\w+)\}", r"<\1>", template)

        def register(fn: RouteFunction) -> RouteFunction:
            spec = RouteSpec(method, template, status, has_body=method in BODY_METHODS,
                             integer_queries=integer_query_parameters(fn))
            self.routes.append(spec)
            self.app.route(powertools_rule, method=method)(fn)
            return fn

        return register

    def get(self, template: str, *, status: int = 200) -> Callable[[RouteFunction], RouteFunction]:
        return self.route("GET", template, status=status)

    def post(self, template: str, *, status: int = 201) -> Callable[[RouteFunction], RouteFunction]:
        return self.route("POST", template, status=status)

    def patch(self, template: str, *, status: int = 200) -> Callable[[RouteFunction], RouteFunction]:
        return self.route("PATCH", template, status=status)

    def delete(self, template: str, *, status: int = 200) -> Callable[[RouteFunction], RouteFunction]:
        return self.route("DELETE", template, status=status)

    # the request being handled
    @property
    def command(self) -> CommandContext:
        """The CommandContext of the current request (correlation id, idempotency reservation)."""
        scope = _current.get()
        if scope is None:
            raise RuntimeError("no request is being handled")
        return scope.command

    # the Lambda handler
    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        with _RESOLVE_LOCK:
            scope = self._scope_of(event)
            token = _current.set(scope)
            logger.set_correlation_id(scope.correlation_id)
            try:
                result = self._handle(event, context, scope)
            except Exception:  # a bug in this plumbing; still no stack trace to the client
                logger.exception("request failed outside the resolver")
                result = json_response(500, {"error": "internal_error", "message": "internal error"})
            finally:
                _current.reset(token)
                logger.set_correlation_id(None)
        status = int(result.get("statusCode") or 500)
        count(f"Responses{status // 100}xx", 1)  # per class: alarms and dashboards read 4xx/5xx rates
        if status == 409:
            count("Conflicts", 1)  # concurrency, taken handles, idempotency clashes
        return self._with_header(result, CORRELATION_HEADER, scope.correlation_id)

    def _scope_of(self, event: Mapping[str, Any]) -> RequestScope:
        given = (_header(event, CORRELATION_HEADER) or "").strip()
        correlation_id = given if _PRINTABLE.match(given) else str(uuid.uuid4())
        request_id = (event.get("requestContext") or {}).get("requestId")
        return RequestScope(
            method=str(event.get("httpMethod") or "").upper(),
            path=_normal_path(str(event.get("path") or "/")),
            correlation_id=correlation_id,
            command=CommandContext(correlation_id, causation_id=request_id if isinstance(request_id, str) else None),
        )

    def _handle(self, event: dict[str, Any], context: Any, scope: RequestScope) -> dict[str, Any]:
        try:
            prepared = self._precheck(event, scope)
        except HttpError as error:
            return json_response(error.status, *error_parts(error))
        return self.app.resolve(prepared, context)

    def _precheck(self, event: dict[str, Any], scope: RequestScope) -> dict[str, Any]:
        """Route (404, 405), then the request's own form (413, 400, key 422); returns the event to resolve."""
        scope.route = self._match(scope.method, scope.path)
        scope.command.success_status = scope.route.status
        scope.query = {str(k): str(v) for k, v in (event.get("queryStringParameters") or {}).items()}
        prepared = dict(event, path=_routable(scope.path))
        if scope.route.has_body:
            scope.body = self._read_body(event)
            headers = _without_header(event.get("headers"), "content-type")
            headers["Content-Type"] = content_types.APPLICATION_JSON
            multi = _without_header(event.get("multiValueHeaders"), "content-type")
            multi["Content-Type"] = [content_types.APPLICATION_JSON]
            prepared.update(
                body=json.dumps(scope.body, ensure_ascii=False), isBase64Encoded=False, headers=headers,
                multiValueHeaders=multi,
            )
        else:
            prepared.update(body=None, isBase64Encoded=False)  # a GET or DELETE ignores any body
        self._check_integer_queries(event, scope.route)
        if scope.method in IDEMPOTENT_METHODS:
            key = _header(event, IDEMPOTENCY_HEADER)
            if key is not None:
                if not _KEY.match(key):
                    raise validation_error(
                        [{"loc": ["header", IDEMPOTENCY_HEADER], "type": "invalid_key",
                          "msg": "1 to 255 visible ASCII characters"}]
                    )
                scope.idempotency_key = key
                scope.command.idempotency_key = key
        return prepared

    @staticmethod
    def _check_integer_queries(event: Mapping[str, Any], route: RouteSpec) -> None:
        """422 for an integer query parameter that is not ASCII digits (pydantic would take "1_0", " 5", "1.0")."""
        if not route.integer_queries:
            return
        single = event.get("queryStringParameters") or {}
        multi = event.get("multiValueQueryStringParameters") or {}
        for name in sorted(route.integer_queries):
            values = list(multi.get(name) or ()) or ([single[name]] if name in single else [])
            if any(not isinstance(value, str) or not _DIGITS.fullmatch(value) for value in values):
                raise validation_error([{"loc": ["query", name], "type": "int_parsing",
                                         "msg": "an integer: ASCII digits only"}])

    def _match(self, method: str, path: str) -> RouteSpec:
        fits = [(spec.literal_rank, spec) for spec in self.routes if spec.match(path) is not None]
        if not fits:
            raise HttpError(404, "not_found", f"no route for {path}")
        for _, spec in sorted(fits, key=lambda fit: fit[0], reverse=True):
            if spec.method == method:
                return spec
        allowed = ", ".join(sorted({spec.method for _, spec in fits}))
        raise HttpError(405, "method_not_allowed", f"{method} is not allowed on {path}", allow=allowed)

    def _read_body(self, event: Mapping[str, Any]) -> dict[str, Any]:
        raw_text = event.get("body")
        raw: bytes
        if raw_text is None:
            raw = b""
        elif event.get("isBase64Encoded"):
            try:
                raw = base64.b64decode(str(raw_text), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise HttpError(400, "bad_request", "the body is not valid base64") from exc
        else:
            raw = str(raw_text).encode("utf-8", errors="surrogatepass")
        if len(raw) > self.max_body:
            raise HttpError(413, "payload_too_large", f"the body is over {self.max_body} bytes")
        content_type = _header(event, "content-type")
        if content_type is not None:
            media = content_type.split(";", 1)[0].strip().lower()
            if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
                raise HttpError(400, "bad_request", "the body must be sent as Content-Type: application/json")
        if not raw.strip():
            raise HttpError(400, "bad_request", "a JSON object body is required")
        body = parse_json_body(raw)
        if not isinstance(body, dict):
            raise HttpError(400, "bad_request", "the body must be a JSON object")
        return body

    # around every matched route: a Powertools middleware, so it runs after request validation (422)
    def _around_route(self, app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
        scope = _current.get()
        if scope is None or scope.route is None:
            return next_middleware(app)
        if scope.idempotency_key is None or self.store is None:
            return self._with_route_status(next_middleware(app), scope.route)
        key = IdempotencyKey(f"{scope.method} {scope.path}", scope.idempotency_key)
        try:
            record = self.store.begin_idempotent(key, request_hash(scope.body, scope.query))
        except IdempotencyKeyReused as exc:
            raise HttpError(
                409, "idempotency_key_reused", "this Idempotency-Key was used with another request"
            ) from exc
        if record.status == "completed":
            stored = record.response or {}
            return Response(
                status_code=int(stored.get("status_code", 200)),
                content_type=content_types.APPLICATION_JSON,
                body=stored.get("body"),
                headers={"Idempotent-Replayed": "true"},
            )
        scope.command.reservation = record
        try:
            response = self._with_route_status(next_middleware(app), scope.route)
        except BaseException:
            self._abandon(record)
            raise
        if 200 <= response.status_code < 300:
            if not scope.command.idempotency_stored:  # a command that appended nothing
                answer = {"status_code": response.status_code, "body": response.body}
                self.store.complete_idempotent(IdempotencyCompletion(record, answer))
        else:
            self._abandon(record)  # only 2xx answers are kept: a 4xx is evaluated afresh on retry
        return response

    @staticmethod
    def _with_route_status(response: Response[Any], route: RouteSpec) -> Response[Any]:
        # A route returns a plain JSON object (Powertools answers it 200); the route says which 2xx.
        if response.status_code == HTTPStatus.OK:
            response.status_code = route.status
        return response

    def _abandon(self, record: IdempotencyRecord) -> None:
        if self.store is None:
            return
        try:
            self.store.abandon_idempotent(record)
        except Exception:  # the lease expires by itself; the answer stands
            logger.warning("idempotency reservation not released", exc_info=True)

    # exception mapping (Powertools calls these; the most specific class wins)
    def _on_validation_error(self, exc: RequestValidationError) -> Response[Any]:
        detail = [
            {"loc": list(error.get("loc", ())), "type": error.get("type"), "msg": error.get("msg")}
            for error in exc.errors()
        ]
        return self._error(validation_error(detail))

    def _on_not_found(self, exc: NotFoundError) -> Response[Any]:
        return self._error(HttpError(404, "not_found", "no such route"))

    def _on_exception(self, exc: Exception) -> Response[Any]:
        return self._error(self.map_exception(exc))

    def map_exception(self, exc: Exception) -> HttpError:
        """The answer for an exception a route raised: domain errors to 4xx, anything else to 500."""
        if isinstance(exc, HttpError):
            return exc
        if isinstance(exc, AggregateNotFound):
            return HttpError(404, "not_found", str(exc))
        if isinstance(exc, VersionConflict):
            return HttpError(409, "conflict", str(exc), current_version=exc.current_version)
        if isinstance(exc, ConcurrencyError):
            extra: dict[str, Any] = {} if exc.current_version is None else {"current_version": exc.current_version}
            return HttpError(409, "conflict", "the resource was changed by another request; reload and retry", **extra)
        if isinstance(exc, ClaimTaken):
            return HttpError(409, f"{exc.claim.scope}_taken", f"{exc.claim.scope} {exc.claim.value!r} is taken")
        if isinstance(exc, IdempotencyInProgress):
            return HttpError(409, "idempotency_in_progress", "a request with this Idempotency-Key is still running")
        if isinstance(exc, TooLarge):
            return HttpError(413, "payload_too_large", "the request is too large to store")
        if is_unavailable(exc):  # not the client's fault, and worth retrying: a 503, never a hang or a 500
            logger.warning("a dependency is unavailable", extra={"error_type": type(exc).__name__})
            return HttpError(503, "service_unavailable", "the service is briefly unavailable; retry shortly",
                             headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        logger.exception("unhandled error in route", extra={"error_type": type(exc).__name__})
        return HttpError(500, "internal_error", "internal error")

    def _error(self, error: HttpError) -> Response[Any]:
        body, headers = error_parts(error)
        return Response(
            status_code=error.status, content_type=content_types.APPLICATION_JSON, body=body, headers=headers
        )

    @staticmethod
    def _with_header(result: dict[str, Any], name: str, value: str) -> dict[str, Any]:
        multi = result.get("multiValueHeaders")
        if isinstance(multi, Mapping):
            result["multiValueHeaders"] = {**multi, name: [value]}
        else:
            result["headers"] = {**(result.get("headers") or {}), name: value}
        return result

