"""Replay's records in SSM: the replay record of a projection, and its active-table pointer.

- The **replay record**, `/eventstack/<stage>/projections/<name>/replay`: a JSON object with the
  replay's parameters (target table, `into`, window, the last archive key listed per service, shard
  count, `partial`, `switch_partial`, `catch_up`) and its phase: `preparing` while its first worker
  creates or empties the target and fixes the cuts, then `building`. It is created only where there
  is none, so concurrent shard workers agree on one, and deleted when the replay finishes or is
  abandoned. Its presence is what "a replay is in progress" means.
- The **pointer**, `/eventstack/<stage>/projections/<name>/table` (escore.tables.TableResolver):
  the table the live projector and the readers use; replay switches it (`--into new`).
"""

from __future__ import annotations

from typing import Any

import orjson

from escore import naming


class ReplayRecords:
    """The replay record and the pointer of one projection in one stage."""

    def __init__(self, ssm: Any, stage: str, projection: str) -> None:
        self.ssm = ssm
        self.record_name = naming.replay_parameter(stage, projection)
        self.pointer = naming.table_parameter(stage, projection)

    def load(self) -> dict[str, Any] | None:
        """The replay in progress, None if there is none."""
        text = self._get(self.record_name)
        if text is None:
            return None
        record: dict[str, Any] = orjson.loads(text)
        return record

    def create(self, record: dict[str, Any]) -> bool:
        """Record a new replay; False if one is recorded already (another worker got there first)."""
        try:
            self.ssm.put_parameter(Name=self.record_name, Value=orjson.dumps(record).decode(), Type="String",
                                   Overwrite=False)
        except self.ssm.exceptions.ParameterAlreadyExists:
            return False
        return True

    def save(self, record: dict[str, Any]) -> None:
        self._put(self.record_name, orjson.dumps(record).decode())

    def delete(self) -> None:
        self.ssm.delete_parameter(Name=self.record_name)

    def pointed(self) -> str | None:
        """The table the pointer names; None while it is not set (readers use the deployed table)."""
        return self._get(self.pointer)

    def point(self, table: str) -> None:
        """Switch the readers and the live projector to `table` (each within its resolver's cache)."""
        self._put(self.pointer, table)

    def _get(self, name: str) -> str | None:
        try:
            return str(self.ssm.get_parameter(Name=name)["Parameter"]["Value"])
        except self.ssm.exceptions.ParameterNotFound:
            return None

    def _put(self, name: str, value: str) -> None:
        self.ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)
