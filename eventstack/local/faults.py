"""Fault injection for the stream-driven invocations (event source mappings and Firehose).

- duplicates P: after a batch is delivered, it is delivered again with probability P (Lambda's and
  Firehose's at-least-once delivery). The second delivery's answer is ignored.
- crash P: with probability P an invocation does part of its work and then fails: the handler runs
  on a prefix of the batch (1..n records, so possibly all of it) and the invocation is reported as
  a function error. The mapping then handles it as any function error (bisect, retry).

Injected crashes model transient failures: they do not use up a mapping's retry budget, so they
never send records to a dead-letter queue. With P < 1 every batch is eventually delivered whole,
which is why projections still end equal to the fold of the unique events.
The HTTP API is never faulted: the contract forbids a 5xx for any client input.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class InjectedCrash(RuntimeError):
    """A function error caused by --fault-crash, not by the handler."""


@dataclass(frozen=True)
class FaultSettings:
    duplicates: float = 0.0
    crash: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("duplicates", "crash"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"--fault-{name} must be between 0 and 1, got {value}")
        if self.crash >= 1.0:
            raise ValueError("--fault-crash must be below 1, or no batch would ever complete")

    @property
    def active(self) -> bool:
        return self.duplicates > 0 or self.crash > 0


class Faults:
    def __init__(self, settings: FaultSettings | None = None):
        self.settings = settings or FaultSettings()
        self._rng = random.Random(self.settings.seed)
        self._lock = threading.Lock()
        self.duplicated = 0
        self.crashed = 0

    def _chance(self, p: float) -> bool:
        if p <= 0:
            return False
        with self._lock:
            return self._rng.random() < p

    def _prefix_length(self, n: int) -> int:
        with self._lock:
            return self._rng.randint(1, n)

    def invoke(self, call: Callable[[Sequence[T]], Any], batch: Sequence[T]) -> Any:
        """Deliver `batch` through `call`, with the configured faults."""
        if batch and self._chance(self.settings.crash):
            k = self._prefix_length(len(batch))
            with contextlib.suppress(Exception):  # the crash is what is reported, whatever the prefix did
                call(batch[:k])
            with self._lock:
                self.crashed += 1
            raise InjectedCrash(f"injected crash after {k} of {len(batch)} records")
        result = call(batch)
        if self._chance(self.settings.duplicates):
            with self._lock:
                self.duplicated += 1
            with contextlib.suppress(Exception):  # a duplicate's outcome is not the batch's
                call(batch)
        return result
