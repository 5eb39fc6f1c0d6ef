"""Drive an API handler exactly as API Gateway (REST, proxy integration) does.

`ApiClient(handler, routes).post("/posts", body={...})` builds the proxy event with
`eventstack.apigw.rest_event`, calls the real handler, and reads the result back with
`eventstack.apigw.parse_proxy_result`. Every answer is checked for what docs/api.md promises of
all of them: a `X-Correlation-Id` header, JSON, an `{"error", "message"}` body on every error,
and (unless a test says otherwise) no 5xx.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from eventstack.apigw import Headers, RouteLike, parse_proxy_result, rest_event
from eventstack.topology import TOPOLOGY

Handler = Callable[[dict[str, Any], Any], Any]


def routes_of(service: str) -> tuple[RouteLike, ...]:
    return TOPOLOGY.service(service).routes


@dataclass
class ApiResponse:
    status: int
    headers: Headers
    body: bytes
    event: dict[str, Any]

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def error(self) -> str | None:
        body = self.json
        return body.get("error") if isinstance(body, dict) else None

    @property
    def correlation_id(self) -> str:
        return self.headers["X-Correlation-Id"]

    def __repr__(self) -> str:
        return f"<{self.event['httpMethod']} {self.event['path']} -> {self.status} {self.body[:300]!r}>"


class ApiClient:
    def __init__(self, handler: Handler, routes: Iterable[RouteLike]) -> None:
        self.handler = handler
        self.routes = tuple(routes)
        self.calls: list[ApiResponse] = []

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | str | None = None,
        base64_body: bool = False,
        allow_5xx: bool = False,
    ) -> ApiResponse:
        event = rest_event(
            method, path, body=body, headers=headers, query=query, routes=self.routes, base64_body=base64_body
        )
        status, response_headers, data = parse_proxy_result(self.handler(event, None))
        response = ApiResponse(status, response_headers, data, event)
        self.calls.append(response)
        check_invariants(response, allow_5xx=allow_5xx)
        return response

    def get(self, path: str, **kwargs: Any) -> ApiResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> ApiResponse:
        return self.request("POST", path, body=body, **kwargs)

    def patch(self, path: str, body: Any = None, **kwargs: Any) -> ApiResponse:
        return self.request("PATCH", path, body=body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> ApiResponse:
        return self.request("DELETE", path, **kwargs)


def check_invariants(response: ApiResponse, *, allow_5xx: bool = False) -> None:
    assert response.headers.get("X-Correlation-Id"), f"no X-Correlation-Id: {response!r}"
    assert response.headers.get("Content-Type", "").startswith("application/json"), response
    body = response.json
    if not allow_5xx:
        assert response.status < 500, f"a client's request got a 5xx: {response!r}"
    if response.status >= 400:
        assert isinstance(body, dict), response
        assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), response
        text = response.body.decode()
        assert "Traceback" not in text and "arn:aws" not in text and "File \"" not in text, response


def expect_error(response: ApiResponse, status: int, error: str) -> dict[str, Any]:
    assert (response.status, response.error) == (status, error), response
    body: dict[str, Any] = response.json
    return body
