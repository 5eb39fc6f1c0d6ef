"""Error answers of the REST APIs (docs/api.md): their shape, their OpenAPI models, and which exception
becomes which answer.

Every error answer is `{"error": code, "message": message, ...}` (`HttpError`, `error_parts`): 404
`not_found`, 405 `method_not_allowed` (with `Allow`), 400 `bad_request`, 413 `payload_too_large`,
422 `validation_error` (with `detail`, `validation_error`), 409 `conflict` (with `current_version`)
and `<scope>_taken`, `idempotency_key_reused`, `idempotency_in_progress`. `map_exception` maps what
a route raised: domain errors to 4xx, a dependency that is unavailable (a timeout, a refused
connection, throttling) to 503 `service_unavailable` with Retry-After, anything else to a logged
500 `internal_error` with no internals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aws_lambda_powertools.event_handler import content_types
from botocore.exceptions import ClientError as BotoClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import HTTPClientError as BotoHTTPClientError
from pydantic import BaseModel, ConfigDict, Field

from escore.aggregate import AggregateNotFound, VersionConflict
from escore.observability import logger
from escore.store import ClaimTaken, ConcurrencyError, IdempotencyInProgress, TooLarge

RETRY_AFTER_SECONDS = 2  # what a 503 asks a client to wait before retrying
# Codes an AWS service answers when it is overloaded or failing, not because of the request: still
# there after botocore's retries, they are a 503 like a timeout.
_UNAVAILABLE_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "Throttling", "RequestLimitExceeded",
    "InternalServerError", "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException",
})


class ErrorAnswer(BaseModel):
    """Every error answer: a code for programs and a message for people (more fields for some codes)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="the code: not_found, bad_request, conflict, ...")
    message: str = Field(description="what went wrong, for a person")


class ConflictAnswer(ErrorAnswer):
    """409: `conflict` (with `current_version` where there is one), `<scope>_taken` (e.g. `handle_taken`),
    `idempotency_key_reused` or `idempotency_in_progress`."""

    current_version: int | None = Field(default=None, description="the resource's version now (for `conflict`)")


class ValidationIssue(BaseModel):
    """One field at fault: where (`["body", "text"]`, `["query", "limit"]`, ...), what kind, and why."""

    loc: list[str | int]
    type: str
    msg: str


class ValidationErrorAnswer(ErrorAnswer):
    """422 `validation_error`: `detail` names every field at fault."""

    detail: list[ValidationIssue]


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


def map_exception(exc: Exception) -> HttpError:
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
