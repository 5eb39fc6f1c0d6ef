"""API Gateway REST API (proxy integration) events and results, as AWS sends and reads them.

Shared by the tests and the local runtime (`eventstack.local`), so both drive the API handlers
with exactly the event shape a deployed API Gateway REST API produces (payload format 1.0):

- `rest_event(method, path, ...)` builds the event: `resource`, `path`, `httpMethod`, `headers`
  and `multiValueHeaders`, `queryStringParameters` and `multiValueQueryStringParameters`,
  `pathParameters`, `stageVariables`, `requestContext` (requestId, stage, httpMethod, path,
  resourcePath, identity.sourceIp, requestTimeEpoch, ...), `body` and `isBase64Encoded`.
  As API Gateway does, absent maps are `None` (not `{}`), and a body that is not UTF-8 text is
  base64-encoded with `isBase64Encoded: true`.
- `match_route(routes, method, target)`: `escore.routes.match_route` (the one matcher, shared
  with the API handlers) on a request target.
- `parse_proxy_result(result)` reads what a handler returned: `(status, headers, body_bytes)`,
  with `headers` and `multiValueHeaders` merged into a case-insensitive `Headers` and a base64
  body decoded.

Standard library and escore only: imported by the test suite and the local runtime alike.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from escore.routes import RouteLike, RouteMatch, RouteMiss
from escore.routes import match_route as routes_match

__all__ = [
    "Headers",
    "RouteLike",
    "RouteMatch",
    "RouteMiss",
    "match_route",
    "parse_proxy_result",
    "query_string",
    "quote_path",
    "rest_event",
]


def _split_target(target: str) -> tuple[str, str]:
    """(path, query) of a request target; unlike urlsplit, `//a/b` is a path, not a host."""
    path, _, query = target.partition("?")
    return (path.split("#", 1)[0] or "/"), query


def match_route(routes: Iterable[RouteLike], method: str, path: str) -> RouteMatch[RouteLike] | RouteMiss:
    """`escore.routes.match_route` on a request target (its query string, if any, ignored)."""
    return routes_match(routes, method, _split_target(path)[0])


class Headers(Mapping[str, str]):
    """Case-insensitive headers; a repeated header reads as its values joined by ", "."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._pairs: list[tuple[str, str]] = list(pairs)

    def __getitem__(self, name: str) -> str:
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def __iter__(self) -> Iterator[str]:
        seen: dict[str, str] = {}
        for name, _ in self._pairs:
            seen.setdefault(name.lower(), name)
        return iter(seen.values())

    def __len__(self) -> int:
        return len({name.lower() for name, _ in self._pairs})

    def get_all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self._pairs if key.lower() == wanted]

    def pairs(self) -> list[tuple[str, str]]:
        """Every (name, value), repeats included, in order: what an HTTP server writes out."""
        return list(self._pairs)

    def __repr__(self) -> str:
        return f"Headers({self._pairs!r})"


def _query_pairs(query: str | Mapping[str, str | Iterable[str]] | None, url_query: str) -> list[tuple[str, str]]:
    pairs = parse_qsl(url_query, keep_blank_values=True)
    if isinstance(query, str):
        pairs += parse_qsl(query.lstrip("?"), keep_blank_values=True)
    elif query is not None:
        for name, value in query.items():
            if isinstance(value, str):
                pairs.append((name, value))
            else:
                pairs.extend((name, item) for item in value)
    return pairs


def _encode_body(body: bytes | str | Mapping[str, Any] | list[Any] | None) -> tuple[str | None, bool, bool]:
    """(body, isBase64Encoded, is_json_value) as API Gateway would pass the bytes on."""
    if body is None:
        return None, False, False
    if isinstance(body, Mapping | list):
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False), False, True
    raw = body.encode("utf-8") if isinstance(body, str) else body
    try:
        return raw.decode("utf-8"), False, False
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), True, False


def rest_event(
    method: str,
    path: str,
    *,
    body: bytes | str | Mapping[str, Any] | list[Any] | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    query: str | Mapping[str, str | Iterable[str]] | None = None,
    routes: Iterable[RouteLike] | None = None,
    stage: str = "prod",
    source_ip: str = "127.0.0.1",
    request_id: str | None = None,
    base64_body: bool = False,
    stage_variables: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The event API Gateway (REST API, Lambda proxy integration) sends for one request.

    `path` may carry a query string (`/users/1/posts?limit=5`); `query` adds parameters
    (a string, or a mapping whose values are a string or several strings). A dict or list `body`
    is sent as JSON with `Content-Type: application/json` unless `headers` set one; bytes that
    are not UTF-8 (or any body, with `base64_body=True`) go base64-encoded. With `routes`, the
    matched template fills `resource`, `pathParameters` and `requestContext.resourcePath`, as
    API Gateway does; without a match (or without `routes`) the resource is the path itself.
    """
    method = method.upper()
    raw_path, url_query = _split_target(path)
    decoded_path = unquote(raw_path)

    header_pairs: list[tuple[str, str]] = list(
        headers.items() if isinstance(headers, Mapping) else (headers or [])
    )
    text, is_base64, is_json = _encode_body(body)
    if is_json and not any(name.lower() == "content-type" for name, _ in header_pairs):
        header_pairs.append(("Content-Type", "application/json"))
    if base64_body and text is not None and not is_base64:
        text, is_base64 = base64.b64encode(text.encode("utf-8")).decode("ascii"), True
    header_pairs.append(("X-Forwarded-For", source_ip))

    single_headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for name, value in header_pairs:
        single_headers[name] = value  # API Gateway keeps the last value in `headers`
        multi_headers.setdefault(name, []).append(value)

    pairs = _query_pairs(query, url_query)
    single_query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for name, value in pairs:
        single_query[name] = value
        multi_query.setdefault(name, []).append(value)

    resource = decoded_path
    path_parameters: dict[str, str] | None = None
    if routes is not None:
        found = match_route(routes, method, raw_path)
        if isinstance(found, RouteMatch):
            resource = found.resource
            path_parameters = found.path_parameters or None

    request_id = request_id or str(uuid.uuid4())
    now_ms = int(time.time() * 1000)
    user_agent = single_headers.get("User-Agent") or next(
        (v for k, v in single_headers.items() if k.lower() == "user-agent"), "eventstack-apigw"
    )
    return {
        "resource": resource,
        "path": decoded_path,
        "httpMethod": method,
        "headers": single_headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": single_query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": path_parameters,
        "stageVariables": dict(stage_variables) if stage_variables else None,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "resourceId": "local",
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/{stage}{decoded_path}",
            "stage": stage,
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now_ms / 1000)),
            "requestTimeEpoch": now_ms,
            "protocol": "HTTP/1.1",
            "domainName": "localhost",
            "identity": {"sourceIp": source_ip, "userAgent": user_agent},
        },
        "body": text,
        "isBase64Encoded": is_base64,
    }


def parse_proxy_result(result: Mapping[str, Any]) -> tuple[int, Headers, bytes]:
    """(status, headers, body bytes) of a proxy integration's result, as API Gateway reads it.

    `headers` and `multiValueHeaders` are merged (API Gateway sends both; a name in both keeps
    the multi-value list), and a body with `isBase64Encoded` is decoded.
    A result without an integer `statusCode` is what API Gateway answers 502 for: ValueError.
    """
    status = result.get("statusCode")
    if not isinstance(status, int) or isinstance(status, bool):
        raise ValueError(f"a proxy result needs an integer statusCode, got {status!r}")
    multi: Mapping[str, Iterable[Any]] = result.get("multiValueHeaders") or {}
    single: Mapping[str, Any] = result.get("headers") or {}
    lowered = {name.lower() for name in multi}
    pairs = [(name, str(value)) for name, values in multi.items() for value in values]
    pairs += [(name, str(value)) for name, value in single.items() if name.lower() not in lowered]
    body = result.get("body") or ""
    data = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode("utf-8")
    return status, Headers(pairs), data


def quote_path(*segments: str) -> str:
    """Join path segments, percent-encoding each (for ids or cursors that may hold `/`)."""
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


def query_string(params: Mapping[str, str | int]) -> str:
    return urlencode({name: str(value) for name, value in params.items()})

