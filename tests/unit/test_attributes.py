"""The attribute codec of read-model items (escore.attributes, boto3's serializers): numbers stay exact."""

from __future__ import annotations

from decimal import Decimal

import pytest

from escore.attributes import from_attr, to_attr
from escore.item_writes import owned_request
from escore.readmodel import from_item
from escore.writes import put

pytestmark = pytest.mark.unit

KEY = ("k", "1")


@pytest.mark.parametrize("text", ["0.1", "1.10", "-2.5", "3.14159265358979323846264338327950288", "1E+3", "-0.000001"])
def test_a_non_integer_number_round_trips_exactly_as_a_decimal(text: str) -> None:
    value = Decimal(text)
    attr = to_attr(value)
    assert attr == {"N": str(value)}
    back = from_attr(attr)
    assert type(back) is Decimal and back == value and str(back) == str(value)
    assert from_attr(to_attr({"m": [value]})) == {"m": [value]}


@pytest.mark.parametrize("value", [0, 1, -7, 2**63, 10**37])
def test_an_integer_stays_an_int(value: int) -> None:
    back = from_attr(to_attr(value))
    assert type(back) is int and back == value
    assert from_attr({"N": str(value)}) == value


def test_floats_are_refused_rather_than_stored_inexactly() -> None:
    with pytest.raises(TypeError):
        to_attr(0.1)
    with pytest.raises(TypeError):
        to_attr({"m": [1.5]})


def test_an_item_written_by_the_engine_reads_back_as_the_fold_wrote_it() -> None:
    attributes = {"price": Decimal("19.99"), "ratio": Decimal("0.333"), "count": 3, "name": "x", "tags": ["a", "b"],
                  "flag": True, "nothing": None}
    _, request = owned_request("t", KEY, put(KEY, attributes), version=4, below=4, may_create=True, now=0)
    read = from_item(request["Item"])
    assert read == {"pk": "k", "sk": "1", **attributes}
    assert type(read["count"]) is int and type(read["price"]) is Decimal
