"""The two jobs of a replay (eventstack.replay): a worker's fold and write, and the finisher's tail and hand-off.

`Worker`: its streams' stream records up to the cuts, then the archive partition by partition,
folded by `escore.rebuild.TableFold`; owned items written after each partition, shared items at the
end (namespace `replay:<i>/<n>`, the live marks of every cut). Then its done marker.

`Finisher`: the tail from the cuts (escore.projection.Projector, the shards' own namespaces), the
`handoff` control item, the pointer switch (`--into new`), the hand-off window, the coverage item,
and the clean-up. Run again (`--resume`), it goes on from the control item's tail positions.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from escore import control
from escore.engine import ApplyResult, Projector, position_of
from escore.envelope import Envelope, EnvelopeError, decode
from escore.projection import REPLAYED, mark_replayed
from escore.projector_lambda import namespace
from escore.rebuild import TableFold, live_marks, write_fold
from eventstack import replay_tables as tables
from eventstack.archive_scan import in_shard
from eventstack.replay_streams import Tail, cut_positions, read_to_cut, shards_parents_first

if TYPE_CHECKING:
    from eventstack.replay import Replayer

HANDOFF_GRACE_SECONDS = 120.0  # the hand-off control outlives the planned window by this much


class Worker:
    def __init__(self, replayer: Replayer, record: dict[str, Any], cuts: dict[str, dict[str, str]]) -> None:
        self.r = replayer
        self.record = record
        self.cuts = cuts
        self.shard = replayer.options.shard
        self.namespace = f"replay:{self.shard[0]}/{self.shard[1]}"

    def run(self) -> bool:
        """Fold and write this worker's streams; True (and the done marker) if nothing went wrong."""
        r, o, summary = self.r, self.r.options, self.r.summary
        dynamodb, table = r.clients.dynamodb, self.record["table"]
        since = datetime.fromisoformat(self.record["since"]) if self.record["since"] else None
        until = datetime.fromisoformat(self.record["until"]) if self.record["until"] else None
        r.progress.phase("reading the streams up to the cut", None)
        origins: dict[str, tuple[str, str]] = {}
        from_stream = self._stream_events(origins)
        r.hooks("stream-read")
        # The recent events of a shared item (escore.rebuild) are one value per shard: exact only if
        # one worker folds every stream; with several, none is written (each would overwrite the others').
        fold = TableFold(r.spec, upcaster=r.upcaster, require_start=since is None,
                         origins=origins if o.shard[1] == 1 else None)

        reader = r._reader()
        objects = []
        for service in r.projection.sources:
            max_key = self.record["max_keys"].get(service)
            if max_key is not None:
                objects += reader.list(service, since, until, max_key=max_key)
        r.progress.phase("reading archive", len(objects))
        stats = summary.archive

        def on_scan(what: str, amount: int) -> None:
            if what == "object":
                r.progress.advance(amount)

        first = True
        for partition in reader.read(objects, shard=o.shard, require_start=since is None, stats=stats,
                                     progress=on_scan, mark={REPLAYED: True}):
            if first:
                r.progress.phase("folding and writing", stats.events_read)
                first = False
            for stream_id, events in partition.streams:
                fold.apply(events)
                later = from_stream.pop(stream_id, None)
                if later:
                    fold.apply(later[v] for v in sorted(later))
                fold.forget([stream_id])
                r.progress.advance(len(events))
            self._write(fold, shared=False)
            r.hooks("partition-written")
        summary.events_read += stats.events_read
        summary.duplicates += stats.duplicates
        summary.problems += stats.problems()
        r.hooks("archive-done")
        for stream_id in sorted(from_stream):  # streams not in the archive yet
            later = from_stream.pop(stream_id)
            fold.apply(later[v] for v in sorted(later))
            fold.forget([stream_id])
        summary.add_fold(fold.stats)
        self._write(fold, shared=False)
        r.hooks("folded")
        if not summary.ok:
            # Shared items are written once (their watermark): not before the problems are fixed.
            r.progress.note(f"shard {o.shard[0]}/{o.shard[1]}: problems; shared items not written, not done")
            return False
        self._write(fold, shared=True)
        r.hooks("written")
        tables.put_state(dynamodb, table, tables.done_key(o.shard),
                         {"events": fold.stats.folded + fold.stats.skipped, "items": summary.written + summary.already})
        return True

    def _write(self, fold: TableFold, *, shared: bool) -> None:
        r = self.r
        marks = live_marks(cut_positions(self.cuts))
        write_fold(fold, r.clients.dynamodb, self.record["table"], self.namespace, marks,
                   owned=None if not shared else {}, shared=shared, workers=max(1, r.options.apply_workers),
                   stats=r.summary.writes)

    def _stream_events(self, origins: dict[str, tuple[str, str]]) -> dict[str, dict[int, Envelope]]:
        """This worker's events of the stream records up to the cuts: stream id -> version -> event;
        and into `origins`, event id -> (namespace, position) of each."""
        r, summary = self.r, self.r.summary
        out: dict[str, dict[int, Envelope]] = {}
        for stream in r.streams:
            mine = self.cuts.get(stream, {})
            for shard_id in shards_parents_first(r.clients.kinesis, stream):
                cut = mine.get(shard_id)
                if cut is None:  # no record at the cut: all it holds comes after
                    continue
                for item in read_to_cut(r.clients.kinesis, stream, shard_id, cut):
                    summary.events_read += 1
                    try:
                        event = decode(item["Data"])
                    except EnvelopeError as exc:  # dead-lettered by the live mappings; nobody can fix it
                        summary.bad_record(f"{stream}/{shard_id} {item['SequenceNumber']}: {exc}")
                        continue
                    if not in_shard(event.stream_id, self.shard):
                        continue
                    origins.setdefault(event.event_id, (namespace(stream, shard_id), position_of(item["SequenceNumber"])))
                    versions = out.setdefault(event.stream_id, {})
                    held = versions.get(event.version)
                    if held is not None:
                        if held.event_id != event.event_id:
                            summary.problems.append(f"{event.stream_id} v{event.version}: two events "
                                                    f"({held.event_id}, {event.event_id}) on {stream}")
                        else:
                            summary.duplicates += 1
                        continue
                    versions[event.version] = mark_replayed(event)
        return out


class Finisher:
    def __init__(self, replayer: Replayer, record: dict[str, Any], cuts: dict[str, dict[str, str]]) -> None:
        self.r = replayer
        self.record = record
        self.cuts = cuts
        self.table: str = record["table"]

    def run(self) -> None:
        r, o, summary = self.r, self.r.options, self.r.summary
        dynamodb, table, into = r.clients.dynamodb, self.table, self.record["into"]
        held = control.read_control(dynamodb, table)
        switched = into == "new" and r.active_table() == table
        if held is None and (switched or into == "in-place") and self._handed_off():
            self._clean_up()  # a finisher stopped after the hand-off: only the clean-up is left
            return
        start = {namespace(stream, shard_id): seq for stream, shards in self.cuts.items() for shard_id, seq in shards.items()}
        if held is not None and held.mode == "handoff":  # resuming: from where the tail got to
            start = {ns: str(int(position)) for ns, position in held.tail.items() if position}
        projector = Projector(r.spec, table, dynamodb, upcaster=r.upcaster)
        in_handoff = [held is not None and held.mode == "handoff"]

        def on_result(result: ApplyResult, records: int) -> None:
            summary.events_read += records
            summary.add(result)

        def on_progress() -> None:
            if in_handoff[0]:
                control.update_tail(dynamodb, table, tail.positions())

        def prepare(event: Envelope) -> Envelope:
            return r.upcaster.upcast(mark_replayed(event))

        tail = Tail(r.clients.kinesis, r.streams, start, projector.apply, prepare=prepare, on_result=on_result,
                    on_problem=summary.problems.append, on_bad_record=summary.bad_record, on_progress=on_progress, page_limit=o.batch_size)
        catch_up = bool(self.record.get("catch_up", True))
        if catch_up:
            r.progress.phase("catching up from the streams", None)
            tail.round()
        r.hooks("caught-up")
        if not summary.ok and into == "new":
            r.progress.note("not switching: the replay reported problems")
            return
        left_out = int(self.record.get("partial") or 0)
        if into == "new" and left_out and not (self.record.get("switch_partial") or o.switch_partial):
            # A window that leaves archive objects out built a table holding only the window.
            summary.withheld = (
                f"{table} holds only the window: {left_out} archive object(s) are outside it, so readers were "
                f"not switched to it ({r.projection.name} still reads {r.active_table()}). Pass --switch-partial "
                f"to switch to such a table; --drop-table {table} to delete it"
            )
            r.progress.note(f"not switching: {summary.withheld}")
            self._clean_up()  # the replay is over; the table stays, not active
            return
        if catch_up:
            control.put_handoff(dynamodb, table, tail.positions(),
                                time.time() + o.handoff_seconds + HANDOFF_GRACE_SECONDS)
            in_handoff[0] = True
        if into == "new":
            r.records.point(table)
            summary.switched = True
            r.hooks("switched")
        if catch_up and o.handoff_seconds > 0:
            r.progress.phase("hand-off: tailing the streams", None)
            deadline = time.monotonic() + o.handoff_seconds
            while True:
                tail.round()
                control.update_tail(dynamodb, table, tail.positions(), until=time.time() + max(
                    0.0, deadline - time.monotonic()) + HANDOFF_GRACE_SECONDS)
                r.hooks("tailed")
                if time.monotonic() >= deadline:
                    break
                time.sleep(min(o.poll_seconds, max(0.0, deadline - time.monotonic())))
        if catch_up:
            control.write_coverage(dynamodb, table, tail.positions(), time.time())
        control.delete_control(dynamodb, table)
        self._clean_up()

    def _handed_off(self) -> bool:
        return bool(control.read_coverage(self.r.clients.dynamodb, self.table)) or not self.record.get("catch_up", True)

    def _clean_up(self) -> None:
        r, o = self.r, self.r.options
        previous = self.record.get("previous")
        switched = self.record["into"] == "new" and r.active_table() == self.table
        if switched and o.drop_old and previous and previous != self.table:
            if previous == r.initial_table():
                r.progress.note(f"kept {previous}: it belongs to the deployment")
            else:
                tables.delete_table(r.clients.dynamodb, previous)
                r.progress.note(f"dropped {previous}")
        r.summary.switched = r.summary.switched or switched
        r.cleanup(self.record)
        r.records.delete()
        r.hooks("finished")
