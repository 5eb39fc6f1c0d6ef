"""The OpenAPI 3.1 document's parts the routes do not say themselves (escore.http.JsonApi.openapi).

Powertools generates the document from the routes (their pydantic bodies, parameters and return
models); `documented_responses` adds, for each route, the error answers the plumbing gives
(escore.http_errors' models) in the order of its checks, and the headers every answer carries;
`with_request_headers` adds the headers every operation reads (X-Correlation-Id, and
Idempotency-Key on a command).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import content_types
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse, OpenAPIResponseHeader
from pydantic import BaseModel

from escore.correlation import CORRELATION_HEADER
from escore.http_errors import ConflictAnswer, ErrorAnswer, ValidationErrorAnswer
from escore.http_idempotency import IDEMPOTENCY_HEADER, IDEMPOTENT_METHODS, KEY_PATTERN
from escore.http_requests import MAX_BODY_BYTES, RouteSpec

_CORRELATION_DOC: OpenAPIResponseHeader = {
    "description": "the request's X-Correlation-Id (printable ASCII, 1-200), or a new UUID",
    "schema": {"type": "string"},
    "required": True,  # type: ignore[typeddict-unknown-key]
}


def _error_doc(
    description: str, model: type[BaseModel], headers: dict[str, OpenAPIResponseHeader] | None = None
) -> OpenAPIResponse:
    return {
        "description": description,
        "headers": {CORRELATION_HEADER: _CORRELATION_DOC, **(headers or {})},
        "content": {content_types.APPLICATION_JSON: {"model": model}},
    }


def documented_responses(route: RouteSpec) -> dict[int, OpenAPIResponse]:
    """What `route` may answer, in the order of the checks: its success, then every error of the module doc."""
    success_headers: dict[str, OpenAPIResponseHeader] = {CORRELATION_HEADER: _CORRELATION_DOC}
    if route.method in IDEMPOTENT_METHODS:
        success_headers["Idempotent-Replayed"] = {
            "description": "`true` when this is the stored answer of an earlier request with the same Idempotency-Key",
            "schema": {"type": "string", "enum": ["true"]},
        }
    responses: dict[int, OpenAPIResponse] = {
        route.status: {"description": "success", "headers": success_headers},  # content: the return model
        404: _error_doc("`not_found`: no such route, or no such resource (a malformed id included)", ErrorAnswer),
        405: _error_doc("`method_not_allowed`: the path has other methods, listed in Allow", ErrorAnswer,
                        {"Allow": {"description": "the methods of the path", "schema": {"type": "string"}}}),
        422: _error_doc(
            "`validation_error`: a field, query parameter or header is invalid; `detail` names each",
            ValidationErrorAnswer),
        503: _error_doc("`service_unavailable`: a dependency is briefly unavailable; retry after Retry-After",
                        ErrorAnswer, {"Retry-After": {"description": "seconds", "schema": {"type": "string"}}}),
    }
    if route.has_body:
        responses[400] = _error_doc(
            "`bad_request`: the body is not a JSON object (malformed, empty, a byte order mark, a number out "
            "of range, not UTF-8), or is sent with a Content-Type other than application/json", ErrorAnswer)
        responses[413] = _error_doc(f"`payload_too_large`: the body is over {MAX_BODY_BYTES} bytes", ErrorAnswer)
    if route.method in IDEMPOTENT_METHODS:
        responses[409] = _error_doc(
            "`conflict` (with `current_version`), `<scope>_taken`, `idempotency_key_reused` or "
            "`idempotency_in_progress`", ConflictAnswer)
    return dict(sorted(responses.items()))


def with_request_headers(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with the headers every operation reads: X-Correlation-Id, and Idempotency-Key on a command."""
    for item in (document.get("paths") or {}).values():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            parameters = operation.setdefault("parameters", [])
            parameters.append({
                "name": CORRELATION_HEADER, "in": "header", "required": False,
                "description": "carried into the answer and the events' metadata; printable ASCII, 1-200 "
                               "characters (anything else is replaced by a new UUID)",
                "schema": {"type": "string"},
            })
            if method.upper() in IDEMPOTENT_METHODS:
                parameters.append({
                    "name": IDEMPOTENCY_HEADER, "in": "header", "required": False,
                    "description": "retry safely: the same key and body gets the first 2xx answer again; "
                                   "1-255 visible ASCII characters",
                    "schema": {"type": "string", "pattern": KEY_PATTERN.pattern},
                })
    return document
