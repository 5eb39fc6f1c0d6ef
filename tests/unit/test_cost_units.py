"""The cost benchmark's unit rules (bench/cost_units.py), against sizes and units computed by hand."""

from __future__ import annotations

import pytest

from bench.cost_units import (
    batch_write_units,
    firehose_billed_bytes,
    floor_write_units,
    gb_seconds,
    item_size,
    kinesis_on_demand_kb,
    kinesis_put_payload_units,
    kinesis_record_size,
    lambda_billed_ms,
    naive_write_units,
    number_size,
    page_read_units,
    plain_item_size,
    read_units,
    transact_read_units,
    transact_write_units,
    value_size,
    write_units,
)

pytestmark = pytest.mark.unit


# --- item size ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "size"),
    [
        ("7", 2),  # 1 significant digit: ceil(1/2) + 1
        ("12", 2),  # 2 digits: 1 + 1
        ("123", 3),  # 3 digits: 2 + 1
        ("12345", 4),  # 5 digits: 3 + 1
        ("1000", 2),  # trailing zeros trimmed: 1 digit
        ("-0.00120", 2),  # sign, leading and trailing zeros trimmed: "12"
        ("0", 2),
        ("3.14159", 4),  # 6 digits: 3 + 1
        ("12345678901234567890123456789012345678", 20),  # 38 digits: 19 + 1
    ],
)
def test_number_size(number: str, size: int) -> None:
    assert number_size(number) == size


def test_scalar_values() -> None:
    assert value_size({"S": "hello"}) == 5
    assert value_size({"S": "é"}) == 2  # UTF-8 bytes, not characters
    assert value_size({"S": ""}) == 0
    assert value_size({"B": b"\x00\x01\x02"}) == 3
    assert value_size({"BOOL": False}) == 1
    assert value_size({"NULL": True}) == 1


def test_sets_are_the_sum_of_their_elements() -> None:
    assert value_size({"SS": ["a", "bc"]}) == 3
    assert value_size({"NS": ["10", "200"]}) == 4  # 2 + 2
    assert value_size({"BS": [b"ab", b"c"]}) == 3


def test_map_and_list_overhead() -> None:
    # M: 3 + per entry (name + value + 1) = 3 + (1 + 2 + 1) = 7
    assert value_size({"M": {"a": {"S": "xy"}}}) == 7
    assert value_size({"M": {}}) == 3
    # L: 3 + per element (value + 1) = 3 + (2 + 1) + (2 + 1) = 9
    assert value_size({"L": [{"N": "1"}, {"S": "ab"}]}) == 9
    assert value_size({"L": []}) == 3
    # nested: outer L 3 + (inner M 3 + (1 + 1 + 1) ... + 1)
    assert value_size({"L": [{"M": {"k": {"BOOL": True}}}]}) == 3 + (3 + (1 + 1 + 1)) + 1


def test_item_size_counts_names_and_values() -> None:
    item = {
        "pk": {"S": "user#1"},  # 2 + 6
        "sk": {"S": "profile"},  # 2 + 7
        "post_count": {"N": "123"},  # 10 + 3
        "tags": {"L": [{"S": "a"}]},  # 4 + (3 + 1 + 1)
    }
    assert item_size(item) == 8 + 9 + 13 + 9
    assert item_size({}) == 0
    assert item_size(None) == 0


def test_plain_item_size_matches_the_typed_form() -> None:
    plain = {"pk": "tag#x", "sk": "count", "tag": "x", "post_count": 12, "live": True,
             "state": {"tags": ["a", "b"]}}
    typed = {
        "pk": {"S": "tag#x"}, "sk": {"S": "count"}, "tag": {"S": "x"}, "post_count": {"N": "12"},
        "live": {"BOOL": True}, "state": {"M": {"tags": {"L": [{"S": "a"}, {"S": "b"}]}}},
    }
    assert plain_item_size(plain) == item_size(typed)
    # by hand: 2+5, 2+5, 3+1, 10+2, 4+1, and "state" 5 + M(3 + ("tags" 4 + L(3 + 2 + 2) + 1))
    assert plain_item_size(plain) == 7 + 7 + 4 + 12 + 5 + (5 + (3 + (4 + 7 + 1)))


# --- DynamoDB units -------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "units"), [(0, 1), (1, 1), (1024, 1), (1025, 2), (2048, 2), (3500, 4)])
def test_write_units_per_started_kb(size: int, units: int) -> None:
    assert write_units(size) == units


def test_transaction_items_cost_twice() -> None:
    # 1,500 bytes: 2 units, doubled; 10 bytes: 1 unit, doubled; a condition check of a 0-byte miss: 1, doubled
    assert transact_write_units([1500, 10, 0]) == 4 + 2 + 2
    assert transact_write_units([]) == 0


def test_batch_write_is_per_item() -> None:
    assert batch_write_units([100, 1500, 3000]) == 1 + 2 + 3


@pytest.mark.parametrize(
    ("size", "consistent", "units"),
    [
        (0, True, 1.0),  # a missing item still costs the minimum
        (0, False, 0.5),
        (4096, True, 1.0),
        (4097, True, 2.0),
        (4097, False, 1.0),
        (8192, False, 1.0),
        (8193, False, 1.5),
        (100, False, 0.5),
    ],
)
def test_read_units(size: int, consistent: bool, units: float) -> None:
    assert read_units(size, consistent) == units


def test_transactional_reads_cost_twice_a_consistent_read() -> None:
    assert transact_read_units([100, 5000]) == 2.0 + 4.0


def test_a_page_is_rounded_once_on_its_summed_size() -> None:
    # two 3,000-byte items: 6,000 bytes -> 2 units (rounded per page, not per item)
    assert page_read_units([3000, 3000], consistent=True) == 2.0
    assert page_read_units([3000, 3000], consistent=False) == 1.0
    assert page_read_units([100] * 40, consistent=True) == 1.0  # 4,000 bytes
    assert page_read_units([], consistent=True) == 1.0  # an empty page still costs the minimum
    assert page_read_units([], consistent=False) == 0.5


# --- the other services ---------------------------------------------------------------------------


def test_kinesis_record_size_is_data_plus_partition_key() -> None:
    assert kinesis_record_size(b"x" * 100, "post-1") == 106
    assert kinesis_record_size("é", "k") == 3


@pytest.mark.parametrize(("size", "kb"), [(1, 1), (1024, 1), (1025, 2), (4608, 5)])
def test_kinesis_on_demand_rounds_each_record_up_to_1_kb(size: int, kb: int) -> None:
    assert kinesis_on_demand_kb(size) == kb


@pytest.mark.parametrize(("size", "units"), [(1, 1), (5 * 1024, 1), (25 * 1024, 1), (25 * 1024 + 1, 2),
                                             (45 * 1024, 2), (1024 * 1024, 41)])
def test_put_payload_units_are_25_kb_chunks(size: int, units: int) -> None:
    assert kinesis_put_payload_units(size) == units


@pytest.mark.parametrize(("size", "billed"), [(1, 5120), (3 * 1024, 5120), (5120, 5120), (5121, 10240),
                                              (12 * 1024, 15 * 1024)])
def test_firehose_rounds_each_record_up_to_5_kb(size: int, billed: int) -> None:
    assert firehose_billed_bytes(size) == billed


def test_lambda_duration_is_rounded_up_to_the_millisecond() -> None:
    assert lambda_billed_ms(0.0) == 1
    assert lambda_billed_ms(0.0001) == 1
    assert lambda_billed_ms(0.001) == 1
    assert lambda_billed_ms(0.0011) == 2
    assert lambda_billed_ms(0.25) == 250
    assert gb_seconds(100, 256) == pytest.approx(0.025)
    assert gb_seconds(1000, 512) == pytest.approx(0.5)


# --- baseline and floor ---------------------------------------------------------------------------


def test_naive_pipeline_is_one_put_per_event_plus_one_unit_per_consumer() -> None:
    # a 700-byte posts event feeding 3 projections: 1 + 3; a 1,100-byte one: 2 + 3; a profiles event: 1 + 1
    assert naive_write_units([(700, 3), (1100, 3), (500, 1)]) == 4 + 5 + 2


def test_floor_is_appends_plus_changed_items() -> None:
    assert floor_write_units([700, 1100], [90, 2000, 0]) == (1 + 2) + (1 + 2 + 1)
