"""What the REST plumbing reads from a request, strictly (docs/api.md), before any route runs.

- the route (`RouteSpec`: method, API Gateway template, success status, whether it takes a body,
  its integer query parameters) and what is known of the request being handled (`RequestScope`);
- the body (`read_body`): 413 `payload_too_large` over 64 KiB after base64 decoding; 400
  `bad_request` for a wrong content type, an empty or malformed body, a byte order mark, a number no
  double or 4000 digits can hold, or a JSON value that is not an object; 422 for a string with an
  unpaired surrogate. Integers are exact at any size (2**64 and 10**40 stay integers);
- integer query parameters (`check_integer_queries`): ASCII digits only, else 422;
- the path as API Gateway routes it (`normal_path`), and as Powertools' router can carry it
  (`routable`: what its router cannot match in a segment is percent-encoded, so the route judges
  the value rather than "no such route").
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Union, get_args, get_origin

from aws_lambda_powertools.event_handler.openapi.params import Query

from escore.aggregate import CommandContext
from escore.http_errors import HttpError, validation_error

MAX_BODY_BYTES = 64 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MAX_INT_DIGITS = 4000  # a JSON integer longer than this is refused (400): Python prints up to 4300 digits
_DIGITS = re.compile(r"[0-9]+")  # an integer parameter: ASCII digits only (no sign, space, "_", "." or "e")
_BOM = b"\xef\xbb\xbf"
# What Powertools' router takes in a path parameter (its _SAFE_URI, _UNSAFE_URI and \w); anything else
# is percent-encoded before routing, so the route (not a "no such route") judges the value.
_UNROUTABLE = re.compile(r"[^-._~()'!*:@,;=+&$%<> \[\]{}|^\w]")


@dataclass(frozen=True)
class RouteSpec:
    method: str
    template: str  # API Gateway form, "/posts/{post_id}"
    status: int  # the success status of the route
    has_body: bool
    integer_queries: frozenset[str] = frozenset()  # query parameters that are integers: digits only

    @property
    def resource(self) -> str:
        """The template, by the name escore.routes matches it by."""
        return self.template


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


def header(event: Mapping[str, Any], name: str) -> str | None:
    wanted = name.lower()
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == wanted and value is not None:
            return str(value)
    for key, values in (event.get("multiValueHeaders") or {}).items():
        if key.lower() == wanted and values:
            return str(values[-1])
    return None


def normal_path(path: str) -> str:
    """`/posts/` and `//posts` are `/posts`, as API Gateway routes them."""
    return "/" + "/".join(segment for segment in path.split("/") if segment)


def without_header(headers: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    return {key: value for key, value in (headers or {}).items() if key.lower() != name.lower()}


def check_integer_queries(event: Mapping[str, Any], route: RouteSpec) -> None:
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


def read_body(event: Mapping[str, Any], max_body: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The body of a route that takes one: a JSON object, or HttpError 413 / 400 (/ 422)."""
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
    if len(raw) > max_body:
        raise HttpError(413, "payload_too_large", f"the body is over {max_body} bytes")
    content_type = header(event, "content-type")
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


def routable(path: str) -> str:
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
