"""The correlation-id rule, in one place: the API handlers and the local runtime's own routes use it.

A request's `X-Correlation-Id` is kept when it is printable ASCII of 1 to 200 characters; any other
value (or none) is replaced by a new UUID. Every answer carries the id it was given.
"""

from __future__ import annotations

import re
import uuid

CORRELATION_HEADER = "X-Correlation-Id"
_PRINTABLE = re.compile(r"^[\x20-\x7e]{1,200}$")


def correlation_id_of(given: str | None) -> str:
    """The request's X-Correlation-Id when it is printable ASCII (1-200), else a new UUID."""
    given = (given or "").strip()
    return given if _PRINTABLE.match(given) else str(uuid.uuid4())
