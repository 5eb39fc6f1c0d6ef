"""What a replay reports: its summary (`ReplaySummary`) and the progress it shows while it runs.

The summary adds up what each part of a replay did (eventstack.replay_work: the fold, the writes,
the tail) and says whether the result may be switched to (`ok`); `eventstack replay` prints it and
takes its exit status from it. `Progress` is what the CLI's progress bar implements.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from escore.engine import ApplyResult
from escore.rebuild import FoldStats, WriteStats
from eventstack.archive_partition import ReadStats


class Progress(Protocol):
    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, amount: int) -> None: ...

    def note(self, message: str) -> None: ...


class NoProgress:
    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass
class ReplaySummary:
    projection: str
    table: str = ""
    events_read: int = 0  # archive lines + stream records read
    duplicates: int = 0  # dropped by event_id in the archive, or by version (archive and stream overlap)
    applied: int = 0  # events folded into the table (and applied by the tail)
    skipped: int = 0  # events of types the projection does not read
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # archive gaps, conflicts, bad lines
    writes: WriteStats = field(default_factory=WriteStats)  # the rebuild's item writes
    switched: bool = False
    withheld: str = ""  # why a finished replay did not switch readers (a window that is not the archive)
    bad_records: int = 0  # stream records nobody can decode (dead-lettered live): passed over
    bad_record_samples: list[str] = field(default_factory=list)  # "<stream>/<shard> <sequence>: <why>"
    waiting_for_shards: int = 0
    seconds: float = 0.0
    archive: ReadStats = field(default_factory=ReadStats)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.problems or self.withheld)

    def bad_record(self, message: str) -> None:
        """A stream record that is not an envelope: the live mappings dead-lettered it, and nothing
        can fix a Kinesis record, so it is counted and named, and the replay goes on."""
        self.bad_records += 1
        if len(self.bad_record_samples) < 10:
            self.bad_record_samples.append(message)

    def line(self) -> str:
        return (
            f"events read: {self.events_read}, duplicates dropped: {self.duplicates}, "
            f"events applied: {self.applied}, items written: {self.written}, seconds: {self.seconds:.1f}"
        )

    def add(self, result: ApplyResult) -> None:
        self.applied += result.applied
        self.skipped += result.skipped
        self.duplicates += result.duplicates

    def add_fold(self, stats: FoldStats) -> None:
        self.applied += stats.folded
        self.skipped += stats.skipped
        self.duplicates += stats.duplicates
        self.failed += stats.failed
        self.failures += stats.failures[: max(0, 10 - len(self.failures))]
        self.problems += stats.problems()

    @property
    def written(self) -> int:
        """Item writes of the rebuild that changed the table."""
        return self.writes.written

    @property
    def already(self) -> int:
        """Item writes of the rebuild found done already (by the run that a resumed one continues)."""
        return self.writes.already
