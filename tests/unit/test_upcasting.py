from typing import Any

import pytest

from escore.envelope import Envelope, new_id, utc_now
from escore.upcasting import SchemaTooNew, UpcasterRegistry

pytestmark = pytest.mark.unit


def make(type_: str = "PostCreated", schema_version: int = 1, **data: Any) -> Envelope:
    return Envelope(
        event_id=new_id(),
        stream_id="post-1",
        version=1,
        type=type_,
        schema_version=schema_version,
        service="posts",
        occurred_at=utc_now(),
        data=data,
        metadata={"correlation_id": "c"},
    )


@pytest.fixture
def registry() -> UpcasterRegistry:
    registry = UpcasterRegistry()

    @registry.register("PostCreated", 1)
    def add_language(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "language": "und"}

    @registry.register("PostCreated", 2)
    def rename_text(data: dict[str, Any]) -> dict[str, Any]:
        data["body"] = data.pop("text")
        return data

    return registry


def test_a_type_without_steps_is_at_schema_1_and_left_alone(registry: UpcasterRegistry) -> None:
    event = make("PostDeleted")
    assert registry.current_version("PostDeleted") == 1
    assert registry.upcast(event) is event


def test_steps_chain_from_the_written_schema_to_the_current_one(registry: UpcasterRegistry) -> None:
    assert registry.current_version("PostCreated") == 3
    old = make(schema_version=1, text="hi")
    up = registry.upcast(old)
    assert (up.schema_version, up.data) == (3, {"body": "hi", "language": "und"})
    assert (up.event_id, up.version, up.type, up.metadata) == (
        old.event_id,
        old.version,
        old.type,
        old.metadata,
    )
    assert old.data == {"text": "hi"}  # the stored event is not changed in place

    middle = registry.upcast(make(schema_version=2, text="yo", language="en"))
    assert (middle.schema_version, middle.data) == (3, {"body": "yo", "language": "en"})


def test_an_event_at_the_current_schema_is_returned_as_is(registry: UpcasterRegistry) -> None:
    current = make(schema_version=3, body="x", language="en")
    assert registry.upcast(current) is current


def test_a_schema_newer_than_the_code_is_an_error(registry: UpcasterRegistry) -> None:
    with pytest.raises(SchemaTooNew, match="PostCreated at schema 4"):
        registry.upcast(make(schema_version=4))
    with pytest.raises(SchemaTooNew):
        registry.upcast(make("PostDeleted", schema_version=2))


def test_registries_are_independent(registry: UpcasterRegistry) -> None:
    assert UpcasterRegistry().current_version("PostCreated") == 1
