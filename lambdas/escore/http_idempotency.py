"""Idempotency of the REST APIs' commands (docs/api.md): the Idempotency-Key, its scope, its answer.

A POST, PUT, PATCH or DELETE with an `Idempotency-Key` header (1-255 visible ASCII characters, else
422) is run once per key: the key is scoped to method and path, and the request hash is the SHA-256
of the canonical JSON of the body and query parameters (`request_hash`). Around the route
(`answer_once`), the key is reserved in the event store (`EventStore.begin_idempotent`): a completed
2xx answer is returned again (`Idempotent-Replayed: true`) with nothing appended, another request
with the key is 409 `idempotency_key_reused`, one still running 409 `idempotency_in_progress`, and
a non-2xx answer or an exception frees the key (a 4xx is evaluated afresh on retry). The answer is
stored by the repository in the same atomic append as the events (escore.aggregate.Repository.save),
so a crash can never leave events without it; a 2xx command that appended nothing stores it here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aws_lambda_powertools.event_handler import Response, content_types

from escore.http_errors import HttpError, validation_error
from escore.http_requests import RequestScope, header
from escore.observability import logger
from escore.store import (
    EventStore,
    IdempotencyCompletion,
    IdempotencyKey,
    IdempotencyKeyReused,
    IdempotencyRecord,
)

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENT_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")


def request_hash(body: Any, query: Mapping[str, Any] | None = None) -> str:
    """Equal JSON, equal hash: keys sorted, no whitespace."""
    value = {"body": body, "query": dict(query or {})}
    try:
        canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # what orjson cannot write (an integer over 64 bits, deep nesting): the same JSON
        canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(canonical).hexdigest()


def idempotency_key(event: Mapping[str, Any], method: str) -> str | None:
    """The request's Idempotency-Key (None without one, or for a method that is not a command); 422 if malformed."""
    if method not in IDEMPOTENT_METHODS:
        return None
    key = header(event, IDEMPOTENCY_HEADER)
    if key is not None and not KEY_PATTERN.match(key):
        raise validation_error(
            [{"loc": ["header", IDEMPOTENCY_HEADER], "type": "invalid_key",
              "msg": "1 to 255 visible ASCII characters"}]
        )
    return key


def answer_once(store: EventStore, scope: RequestScope, key: str, run: Callable[[], Response[Any]]) -> Response[Any]:
    """`run()` (the route) at most once per key and request, as the module's docstring says."""
    reservation = IdempotencyKey(f"{scope.method} {scope.path}", key)
    try:
        record = store.begin_idempotent(reservation, request_hash(scope.body, scope.query))
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
        response = run()
    except BaseException:
        _abandon(store, record)
        raise
    if 200 <= response.status_code < 300:
        if not scope.command.idempotency_stored:  # a command that appended nothing
            answer = {"status_code": response.status_code, "body": response.body}
            store.complete_idempotent(IdempotencyCompletion(record, answer))
    else:
        _abandon(store, record)  # only 2xx answers are kept: a 4xx is evaluated afresh on retry
    return response


def _abandon(store: EventStore, record: IdempotencyRecord) -> None:
    try:
        store.abandon_idempotent(record)
    except Exception:  # the lease expires by itself; the answer stands
        logger.warning("idempotency reservation not released", exc_info=True)
