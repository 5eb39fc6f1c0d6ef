"""`eventstack replay PROJECTION`: rebuild a projection from the archive (docs/replay.md)."""

from __future__ import annotations

import sys
import threading
import time
from typing import Annotated, Any

import typer

from eventstack.commands import reason
from eventstack.topology import TOPOLOGY

PROJECTIONS = ", ".join(projection.name for _, projection in TOPOLOGY.projections)

StageOption = Annotated[
    str | None,
    typer.Option("--stage", envvar="EVENTSTACK_STAGE", help="Stage (dev, prod, ...); default: the one deployed."),
]


def replay(
    projection: Annotated[str, typer.Argument(help=f"The projection to rebuild: {PROJECTIONS}.")],
    since: Annotated[str | None, typer.Option(
        help="Archive partitions from this time (RFC 3339, UTC). A window that leaves archive objects out builds a "
             "table holding only the window: see --switch-partial.")] = None,
    until: Annotated[str | None, typer.Option(help="Archive partitions before this time (see --since).")] = None,
    switch_partial: Annotated[bool, typer.Option(
        "--switch-partial",
        help="With a --since/--until window that leaves archive objects out: switch readers to the table anyway "
             "(--into new), or rebuild the active table from the window alone (--into in-place, refused without "
             "it). Without it, --into new builds the table, does not switch, and exits 3.")] = False,
    into: Annotated[str, typer.Option(
        help="new: a fresh table, switched to when complete; in-place: hold the live projector back, reset and rebuild."
    )] = "new",
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted replay.")] = False,
    abandon: Annotated[bool, typer.Option("--abandon", help="Drop an unfinished replay (and its half-built table).")] = False,
    engine_name: Annotated[str | None, typer.Option(
        "--engine", help="Where the fold runs. local: DuckDB plans the window into files (de-duplicated, bucketed by stream, "
             "ordered), --workers processes fold them; aws: Athena plans, a Step Functions Distributed Map of "
             "Lambdas folds. Default local (with --shard: the scan engine).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, max=256, help="Fold workers: processes (local, default the "
                                                "CPU count, at most 8) or concurrent Lambdas (aws).")] = None,
    files: Annotated[int | None, typer.Option(min=1, max=4096, help="The plan's file (bucket) count; default from the "
                                              "archive's size, so one file folds well within a Lambda's 15 minutes, "
                                              "and at least --workers.")] = None,
    shard: Annotated[
        str | None, typer.Option(help="i/n, counting from 0 (0/n to n-1/n): the scan engine; replay the streams of hash "
                                   "range i of n, reading the whole archive; run n workers, one per range.")
    ] = None,
    drop_old: Annotated[bool, typer.Option("--drop-old", help="After switching, delete the table replaced.")] = False,
    drop_table: Annotated[
        str | None, typer.Option("--drop-table", help="Delete a retired table of this projection, and do nothing else.")
    ] = None,
    list_tables: Annotated[bool, typer.Option("--list-tables", help="List this projection's tables, and do nothing else.")] = False,
    catch_up: Annotated[bool, typer.Option(
        help="Fold the streams up to a cut, tail them after it and hand off (--no-catch-up: the archive only, "
             "for a stage where nothing is live).")] = True,
    handoff: Annotated[
        float | None, typer.Option(min=0.0, help="Seconds to keep tailing the streams after the switch "
                                               "(default: 2x the table cache + 10).")
    ] = None,
    write_workers: Annotated[int | None, typer.Option(min=1, max=64, help="Concurrent item writes per fold worker "
                                                      "(default 4; 1 against the local runtime).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Stream records per call of the tail's projector.")] = 500,
    memory: Annotated[int | None, typer.Option(min=1, help="Memory budget in MiB for ordering "
                                               "(more: fewer spill partitions).")] = None,
    stage: StageOption = None,
) -> None:
    """Rebuild a projection from the archive, then hand it over to the live stream.

    Exit status:
    0 done: switched (--into new) or rebuilt in place;
    1 problems (archive gaps, conflicts, unreadable objects, failed folds): not switched; fix, then --resume or --abandon;
    2 a bad option, or a replay that cannot start (a windowed --into in-place without --switch-partial);
    3 a --since/--until window that leaves archive objects out built a table holding only the window: not switched.
    """
    from rich.console import Console
    from rich.markup import escape

    from eventstack import replay as engine
    from eventstack import resources
    from eventstack.archive import ArchiveError, parse_shard, parse_time

    err = Console(stderr=True)
    if into not in ("new", "in-place"):
        raise typer.BadParameter("--into takes new or in-place")
    if engine_name is not None and engine_name not in ("local", "aws"):
        raise typer.BadParameter("--engine takes local or aws", param_hint="--engine")
    if engine_name is not None and shard:
        raise typer.BadParameter("--shard runs the scan engine; leave --engine out (or --shard out: --workers "
                                 "splits the plan's work)", param_hint="--engine")
    try:
        # the arguments are checked before any AWS call
        TOPOLOGY.projection(projection)
        since_time = parse_time(since) if since else None
        until_time = parse_time(until) if until else None
        shard_range = parse_shard(shard)
        from eventstack.replay_pool import default_workers
        found = resources.load(stage)
        options = engine.ReplayOptions(
            projection,
            into=into,  # type: ignore[arg-type]
            since=since_time,
            until=until_time,
            resume=resume,
            abandon=abandon,
            shard=shard_range,
            engine="scan" if shard else engine_name or "local",  # type: ignore[arg-type]
            workers=workers or default_workers(),
            files=files,
            batch_size=batch_size,
            apply_workers=write_workers or (1 if resources.is_local_endpoint() else 4),
            catch_up=catch_up,
            drop_old=drop_old,
            switch_partial=switch_partial,
            memory_budget=memory * 1024 * 1024 if memory else None,
        )
        if handoff is not None:
            options.handoff_seconds = handoff
        with RichProgress(err) as progress:
            replayer = engine.Replayer(options, found, engine.Clients.default(), progress=progress)
            if list_tables:
                for name, active in replayer.tables():
                    print(f"{name}{'  (active)' if active else ''}")
                return
            if drop_table:
                replayer.drop_table(drop_table)
                return
            summary = replayer.run()
    except (engine.ReplayError, resources.ResourceError, ArchiveError, KeyError, ValueError) as exc:
        err.print(f"[red]error:[/red] {escape(reason(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    if abandon:
        print(f"abandoned the replay into {summary.table}")
        return
    for problem in summary.problems + summary.failures:
        err.print(f"[red]problem:[/red] {problem}")
    if summary.bad_records:
        err.print(f"{summary.bad_records} stream record(s) are not envelopes (the live mappings dead-lettered them; "
                  "nothing can fix a Kinesis record): passed over")
        for sample in summary.bad_record_samples:
            err.print(f"  passed over: {sample}", soft_wrap=True)
    if summary.skipped:
        err.print(f"{summary.skipped} events of types {projection} does not read were passed over")
    if summary.waiting_for_shards and summary.ok:
        err.print(f"shard done; {summary.waiting_for_shards} shard(s) still running: the last to finish switches")
    elif summary.switched:
        err.print(f"{projection} now reads {summary.table}")
    elif summary.withheld and not (summary.problems or summary.failed):
        err.print(f"[yellow]not switched:[/yellow] {summary.withheld}")
        print(summary.line())
        raise typer.Exit(3)
    elif into == "new" and not summary.ok:
        err.print(f"not switched: {projection} still reads its previous table; fix, then --resume or --abandon")
    elif into == "in-place" and not summary.ok:
        err.print(f"{summary.table} may be incomplete; fix, then --resume (or --abandon and replay again)")
    print(summary.line())
    if not summary.ok:
        raise typer.Exit(1)


class RichProgress:
    """The engine's progress, as a rich progress bar with events per second (on stderr)."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self._bar = Progress(
            TextColumn("{task.description:<30}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>12}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal and not sys.stderr.isatty(),
        )
        self._task: Any = None
        self._started = 0.0
        self._done = 0
        self._lock = threading.Lock()  # the engine reports from its writer threads

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def phase(self, name: str, total: int | None) -> None:
        unit = "objects" if name.startswith("reading") else "events"
        self._task = self._bar.add_task(name, total=total, rate="", unit=unit)
        self._started, self._done = time.monotonic(), 0

    def advance(self, amount: int) -> None:
        with self._lock:
            if self._task is None:
                return
            self._done += amount
            elapsed = max(time.monotonic() - self._started, 1e-6)
            unit = self._bar.tasks[-1].fields.get("unit", "events")
            self._bar.update(self._task, advance=amount, rate=f"{self._done / elapsed:,.0f} {unit}/s")

    def note(self, message: str) -> None:
        self._bar.console.print(message)
