"""DynamoDB attribute values of read-model items: boto3's `TypeSerializer` and `TypeDeserializer`.

Numbers stay exact both ways. A Python `int` is an `N` and comes back an `int` (boto3 alone would
give every number back as a `Decimal`; the folds and readers count in ints). Any other number is a
`Decimal` both ways, at DynamoDB's 38 digits; a `float` is refused (TypeError), as boto3 refuses it,
because it cannot be stored exactly. Beyond str, int, Decimal, bool, None, dicts and lists, boto3
also maps bytes (`B`) and sets (`SS`, `NS`, `BS`, read back as Python sets).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer


class _Deserializer(TypeDeserializer):  # type: ignore[misc]  # boto3 ships no type hints
    """boto3's, except that an `N` written as an integer (digits only) is read as an `int`."""

    def _deserialize_n(self, value: str) -> int | Decimal:
        if value.lstrip("-").isdigit():
            return int(value)
        number: Decimal = super()._deserialize_n(value)
        return number


_serialize = TypeSerializer().serialize
_deserialize = _Deserializer().deserialize


def to_attr(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB attribute value, e.g. `5` -> `{"N": "5"}`."""
    attr: dict[str, Any] = _serialize(value)
    return attr


def from_attr(attr: Mapping[str, Any]) -> Any:
    """A DynamoDB attribute value as a Python value, e.g. `{"N": "1.5"}` -> `Decimal("1.5")`."""
    return _deserialize(attr)
