"""FaultSettings: every probability 0..1, crashes and poller kills below 1, a retry duration Firehose
allows; and the settings that existed before keep their positions (the CLI passes them so)."""

from __future__ import annotations

import pytest

from eventstack.local.faults import Faults, FaultSettings, PollerKilled

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("field", ["duplicates", "crash", "poller_kill", "kinesis_throttle", "archive_put_failure"])
@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_a_probability_out_of_range_is_refused_by_its_flag_name(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"--fault-{field.replace('_', '-')} must be"):
        FaultSettings(**{field: value})


@pytest.mark.parametrize("field", ["crash", "poller_kill"])
def test_crashes_and_kills_must_leave_batches_a_chance(field: str) -> None:
    with pytest.raises(ValueError, match="below 1"):
        FaultSettings(**{field: 1.0})


def test_an_outage_is_a_probability_of_one() -> None:
    assert FaultSettings(kinesis_throttle=1.0, archive_put_failure=1.0).active


@pytest.mark.parametrize("seconds", [-1.0, 7201.0])
def test_the_archive_retry_duration_is_within_firehose_bounds(seconds: float) -> None:
    with pytest.raises(ValueError, match="retry duration"):
        FaultSettings(archive_retry_seconds=seconds)


def test_the_first_three_settings_keep_their_positions() -> None:
    settings = FaultSettings(0.25, 0.5, 7)
    assert (settings.duplicates, settings.crash, settings.seed) == (0.25, 0.5, 7)
    assert not FaultSettings().active and FaultSettings(poller_kill=0.1).active


def test_an_armed_kill_ends_the_delivery_after_part_of_it() -> None:
    faults = Faults()
    faults.kill_next()
    seen: list[list[int]] = []
    with pytest.raises(PollerKilled):
        faults.invoke(lambda batch: seen.append(list(batch)), [1, 2, 3])
    assert faults.killed == 1 and len(seen) == 1 and seen[0] == [1, 2, 3][: len(seen[0])]
    assert faults.invoke(lambda batch: sum(batch), [1, 2, 3]) == 6  # armed once only
    assert not issubclass(PollerKilled, Exception)  # no `except Exception` on the way swallows it
