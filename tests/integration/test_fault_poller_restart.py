"""A mapping's poller thread killed part-way through a batch, and its successor (poller_kill).

The killed thread really ends; a new one starts POLLER_RESTART_SECONDS later and knows only the
checkpoints: the batch being delivered comes again from just after the last checkpoint, nothing
after it is skipped, nothing before it is delivered again. Against moto's server, tiny handlers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from eventstack.local.emulation import MotoEmulation
from eventstack.local.faults import Faults, FaultSettings
from eventstack.local.mappings import POLLER_RESTART_SECONDS, EventSourceMapping
from tests.integration.test_local_mappings import Recorder, mapping, moto, new_stream, put

pytestmark = pytest.mark.integration
__all__ = ["moto"]  # the module-scoped emulation fixture, shared with test_local_mappings


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.01)


def first_batch_done(esm: EventSourceMapping, handler: Recorder) -> None:
    """Deliver the first batch from the test's thread, so the shard has a checkpoint."""
    deadline = time.monotonic() + 10
    while not handler.batches:
        assert time.monotonic() < deadline
        esm.tick()


def test_the_successor_resumes_from_the_checkpoint(moto: MotoEmulation) -> None:
    stream, arn = new_stream(moto)
    items = [f"r{i}" for i in range(1, 10)]
    sequence_numbers = put(moto, stream, items)
    handler = Recorder()
    faults = Faults(FaultSettings(seed=5))
    esm = mapping(moto, stream, arn, handler, faults=faults, batch_size=3)
    first_batch_done(esm, handler)
    state = next(iter(esm.reader.shards.values()))
    assert handler.data(handler.batches[0]) == ["r1", "r2", "r3"] and state.checkpoint == int(sequence_numbers[2])

    faults.kill_next()  # the next delivery, r4..r6, dies part-way
    esm.start()
    killed = esm._thread
    assert killed is not None
    wait_for(lambda: esm.kills == 1)
    killed.join(2)
    assert not killed.is_alive()  # the poller thread really ended
    assert esm.restarts == 0 and not esm.caught_up_since(0.0)  # nobody polls yet: not drained
    started_again = time.monotonic()
    wait_for(lambda: esm.restarts == 1 and esm.records_done == 9)
    assert time.monotonic() - started_again >= POLLER_RESTART_SECONDS * 0.5
    assert esm._thread is not killed and esm._thread is not None and esm._thread.is_alive()
    esm.stop()

    seen = [handler.data(b) for b in handler.batches]
    prefix = seen[1]  # what the killed poller's delivery did before it died
    assert 1 <= len(prefix) <= 3 and prefix == items[3:3 + len(prefix)]
    assert seen[2:] == [["r4", "r5", "r6"], ["r7", "r8", "r9"]]  # from just after the checkpoint, in order
    assert state.checkpoint == int(sequence_numbers[-1])
    assert esm.status()["poller_kills"] == esm.status()["poller_restarts"] == 1


def killed_at_once(moto: MotoEmulation, items: list[str]) -> tuple[EventSourceMapping, Recorder]:
    """A running mapping over `items` (one batch) whose first delivery kills its poller."""
    stream, arn = new_stream(moto)
    put(moto, stream, items)
    handler = Recorder()
    faults = Faults()
    faults.kill_next()
    esm = mapping(moto, stream, arn, handler, faults=faults, batch_size=len(items))
    esm.start()
    return esm, handler


def test_a_kill_before_any_checkpoint_starts_again_from_the_starting_position(moto: MotoEmulation) -> None:
    esm, handler = killed_at_once(moto, ["a", "b", "c", "d"])
    wait_for(lambda: esm.records_done == 4)
    esm.stop()
    assert handler.data(handler.batches[-1]) == ["a", "b", "c", "d"]
    assert esm.kills == esm.restarts == 1


def test_stop_while_a_successor_is_pending_starts_none(moto: MotoEmulation) -> None:
    esm, _handler = killed_at_once(moto, ["x", "y"])
    wait_for(lambda: esm.kills == 1)
    esm.stop()
    time.sleep(POLLER_RESTART_SECONDS + 0.3)
    assert esm.restarts == 0
    assert esm._thread is not None and not esm._thread.is_alive()


def test_random_kills_with_crashes_and_duplicates_deliver_everything(moto: MotoEmulation) -> None:
    stream, arn = new_stream(moto)
    items = [f"k{i}" for i in range(40)]
    put(moto, stream, items)
    handler = Recorder()
    faults = Faults(FaultSettings(poller_kill=0.3, crash=0.2, duplicates=0.2, seed=9))
    dlq: list[dict[str, Any]] = []
    esm = mapping(moto, stream, arn, handler, dlq=dlq, faults=faults, batch_size=4, max_retries=0)
    esm.start()
    wait_for(lambda: esm.records_done == 40, seconds=30)
    esm.stop()
    assert faults.killed > 0 and esm.restarts == esm.kills == faults.killed
    assert set(handler.all_data()) == set(items) and dlq == []  # kills, like crashes, use up no retries
