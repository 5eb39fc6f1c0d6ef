"""The event envelope (docs/api.md, "The event envelope") and its one codec.

Every event, in the store, on Kinesis, in the archive and in replay, is one `Envelope`.
`encode`/`decode` are the only way bytes become envelopes and back: orjson, compact,
and on Kinesis followed by one newline (`encode_record`).

The envelope is a frozen dataclass, not a pydantic model: it is decoded on every hot
path (projectors, replay of millions of archived events), and a hand-written check of
nine fields costs a fraction of a model validation. Pydantic stays at the HTTP edge.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

ENVELOPE_FIELDS = (
    "event_id",
    "stream_id",
    "version",
    "type",
    "schema_version",
    "service",
    "occurred_at",
    "data",
    "metadata",
)


class EnvelopeError(ValueError):
    """Bytes or a mapping that is not a valid envelope."""


def utc_now() -> str:
    """RFC 3339, UTC, microseconds: the one timestamp format of the contract."""
    return format_timestamp(datetime.now(UTC))


def format_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Envelope:
    event_id: str
    stream_id: str
    version: int
    type: str
    schema_version: int
    service: str
    occurred_at: str
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    # Fields a newer writer added that this code does not know: kept, so a round trip loses nothing.
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(
            event_id=self.event_id,
            stream_id=self.stream_id,
            version=self.version,
            type=self.type,
            schema_version=self.schema_version,
            service=self.service,
            occurred_at=self.occurred_at,
            data=self.data,
            metadata=self.metadata,
        )
        return out

    def with_changes(self, **changes: Any) -> Envelope:
        return replace(self, **changes)

    @property
    def correlation_id(self) -> str | None:
        value = self.metadata.get("correlation_id")
        return value if isinstance(value, str) else None


_FIELD_SET = frozenset(ENVELOPE_FIELDS)


def with_data(event: Envelope, data: dict[str, Any], schema_version: int) -> Envelope:
    """`event` with new `data` at `schema_version` (what upcasting makes; cheaper than dataclasses.replace)."""
    return Envelope(event.event_id, event.stream_id, event.version, event.type, schema_version, event.service,
                    event.occurred_at, data, event.metadata, event.extra)


def from_dict(raw: Any) -> Envelope:
    """Validate a decoded JSON object as an envelope; raise EnvelopeError saying what is wrong."""
    # Fast path: a plain dict with every field of its exact JSON type (what orjson gives for any
    # valid envelope). Anything else, valid or not, goes through the full check below, which
    # accepts the same inputs as ever and raises the same errors.
    if type(raw) is dict:
        try:
            event_id = raw["event_id"]
            stream_id = raw["stream_id"]
            version = raw["version"]
            type_ = raw["type"]
            schema_version = raw["schema_version"]
            service = raw["service"]
            occurred_at = raw["occurred_at"]
            data = raw["data"]
            metadata = raw["metadata"]
        except KeyError:
            pass
        else:
            if (
                type(event_id) is str and event_id
                and type(stream_id) is str and stream_id
                and type(type_) is str and type_
                and type(service) is str and service
                and type(occurred_at) is str and occurred_at
                and type(version) is int and version >= 1
                and type(schema_version) is int and schema_version >= 1
                and type(data) is dict
                and type(metadata) is dict
            ):
                extra = {} if len(raw) == len(_FIELD_SET) else {k: v for k, v in raw.items() if k not in _FIELD_SET}
                return Envelope(event_id, stream_id, version, type_, schema_version, service, occurred_at, data,
                                metadata, extra)
    return _from_dict_checked(raw)


def _from_dict_checked(raw: Any) -> Envelope:
    if not isinstance(raw, dict):
        raise EnvelopeError(f"an envelope is a JSON object, got {type(raw).__name__}")
    missing = [name for name in ENVELOPE_FIELDS if name not in raw]
    if missing:
        raise EnvelopeError(f"envelope lacks {', '.join(missing)}")
    for name in ("event_id", "stream_id", "type", "service", "occurred_at"):
        if not isinstance(raw[name], str) or not raw[name]:
            raise EnvelopeError(f"envelope field {name} must be a non-empty string")
    for name in ("version", "schema_version"):
        value = raw[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise EnvelopeError(f"envelope field {name} must be an integer >= 1")
    for name in ("data", "metadata"):
        if not isinstance(raw[name], dict):
            raise EnvelopeError(f"envelope field {name} must be an object")
    extra = {k: v for k, v in raw.items() if k not in ENVELOPE_FIELDS}
    return Envelope(
        event_id=raw["event_id"],
        stream_id=raw["stream_id"],
        version=raw["version"],
        type=raw["type"],
        schema_version=raw["schema_version"],
        service=raw["service"],
        occurred_at=raw["occurred_at"],
        data=raw["data"],
        metadata=raw["metadata"],
        extra=extra,
    )


def encode(envelope: Envelope) -> bytes:
    """Compact JSON, no trailing newline."""
    return orjson.dumps(envelope.to_dict())


def encode_record(envelope: Envelope) -> bytes:
    """The bytes of a Kinesis record and of an archive line: compact JSON and one newline."""
    return orjson.dumps(envelope.to_dict()) + b"\n"


def decode(data: bytes | str) -> Envelope:
    """Decode one envelope from JSON (a trailing newline is allowed)."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"not JSON: {exc}") from exc
    return from_dict(raw)
