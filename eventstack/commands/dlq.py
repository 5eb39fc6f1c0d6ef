"""`eventstack dlq list|redrive`: the event source mappings' dead-letter queues (docs/replay.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from eventstack.commands import reason

app = typer.Typer(help="Dead-letter queues of the event source mappings: list them, send them back.",
                  no_args_is_help=True)

StageOption = Annotated[
    str | None, typer.Option("--stage", envvar="EVENTSTACK_STAGE", help="Stage; default: the one deployed.")
]


def _dead_letters(stage: str | None):  # type: ignore[no-untyped-def]
    from eventstack import resources
    from eventstack.dlq import DeadLetters

    clients: dict[str, object] = {}

    def client(name: str) -> object:
        if name not in clients:
            clients[name] = resources.client(name)
        return clients[name]

    return DeadLetters(resources.load(stage), client)


@app.command("list")
def list_(
    peek: Annotated[int, typer.Option(min=0, help="Messages to summarise per queue.")] = 10,
    stage: StageOption = None,
) -> None:
    """What every mapping's DLQ holds: counts, and the failed batches they point at."""
    from eventstack.resources import ResourceError

    try:
        reports = _dead_letters(stage).list(peek=peek)
    except ResourceError as exc:
        typer.echo(f"error: {reason(exc)}", err=True)
        raise typer.Exit(2) from None
    for report in reports:
        if report.url is None:
            typer.echo(f"{report.mapping:<32} {report.queue}: no such queue")
            continue
        typer.echo(f"{report.mapping:<32} {report.visible} message(s)"
                   + (f", {report.in_flight} in flight" if report.in_flight else ""))
        for failure in report.failures:
            typer.echo(f"    {failure.summary()}")


@app.command("redrive")
def redrive(
    mapping: Annotated[
        str | None, typer.Argument(help="A mapping, e.g. posts-publisher or user_timeline-from-posts; default: all.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many messages per queue.")] = 1000,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read the records back, change nothing.")] = False,
    stage: StageOption = None,
) -> None:
    """Re-read the records each message points at and run the mapping's handler on them again."""
    from eventstack.dlq import _order
    from eventstack.resources import ResourceError

    try:
        dead = _dead_letters(stage)
        names = [mapping] if mapping else sorted(dead.resources.dlqs, key=_order)
        reports = [dead.redrive(name, limit=limit, dry_run=dry_run) for name in names]
    except (ResourceError, KeyError) as exc:
        typer.echo(f"error: {reason(exc)}", err=True)
        raise typer.Exit(2) from None
    kept = 0
    busy = [r for r in reports if r.redriven or r.kept or r.problems]
    if not busy:
        where = f"the DLQ of {mapping}" if mapping else "any DLQ"
        typer.echo(f"nothing to redrive{' (dry run)' if dry_run else ''}: no message in {where}")
    for report in busy:
        verb = "would redrive" if dry_run else "redriven"
        typer.echo(f"{report.mapping}: {report.records} record(s) read; {verb}: "
                   f"{report.kept if dry_run else report.redriven} message(s); kept: {0 if dry_run else report.kept}")
        for problem in report.problems:
            typer.echo(f"    {problem}", err=True)
        kept += 0 if dry_run else report.kept
    if kept:
        raise typer.Exit(1)
