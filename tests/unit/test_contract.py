"""escore.contract: a service's events with their schema versions and upcast steps side by side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from escore.aggregate import DomainEvent
from escore.contract import EventContract, SchemaTooNew, steps
from escore.envelope import Envelope, new_id

pytestmark = pytest.mark.unit


def _renamed(data: dict[str, Any]) -> dict[str, Any]:
    return {"name": data.get("title", "")}


def _shouted(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "loud": str(data["name"]).upper()}


@dataclass(frozen=True)
class Titled(DomainEvent):
    type = "Titled"
    schema_version = 3
    upcasts = steps(_renamed, _shouted)
    name: str
    loud: str


def _envelope(type_: str, schema: int, data: dict[str, Any]) -> Envelope:
    return Envelope(new_id(), "thing-1", 1, type_, schema, "things", "2026-01-01T00:00:00.000000Z", data, {})


def test_decode_upcasts_through_every_step_into_the_class() -> None:
    contract = EventContract("things", (Titled,))
    assert contract.decode(_envelope("Titled", 1, {"title": "hi"})) == Titled(name="hi", loud="HI")
    assert contract.decode(_envelope("Titled", 3, {"name": "a", "loud": "A", "later": 1})) == Titled(name="a", loud="A")
    assert contract.current_version("Titled") == 3 and contract.current_version("Other") == 1


def test_an_unknown_type_is_skipped_and_a_newer_schema_refused() -> None:
    contract = EventContract("things", (Titled,))
    assert contract.decode(_envelope("Retitled", 1, {})) is None
    with pytest.raises(SchemaTooNew):
        contract.decode(_envelope("Titled", 4, {"name": "x", "loud": "X"}))


def test_a_contract_refuses_a_missing_step_or_a_type_twice() -> None:
    @dataclass(frozen=True)
    class Gapped(DomainEvent):
        type = "Gapped"
        schema_version = 3
        upcasts = steps(_renamed)

    with pytest.raises(ValueError, match="no step from \\[2\\]"):
        EventContract("things", (Gapped,))
    with pytest.raises(ValueError, match="two event classes of type Titled"):
        EventContract("things", (Titled, Titled))
