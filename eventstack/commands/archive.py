"""`eventstack archive verify SERVICE`: compare a service's event store with the archive (docs/replay.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from eventstack.commands import reason

app = typer.Typer(help="The event archive in S3: check it against the event stores.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """The event archive in S3."""


@app.command("verify")
def verify(
    service: Annotated[str, typer.Argument(help="posts, profiles, ...")],
    since: Annotated[str | None, typer.Option(help="Only events that occurred from this time (RFC 3339, UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Only events that occurred before this time.")] = None,
    grace: Annotated[
        float, typer.Option(help="Events younger than this many seconds may not be archived yet: not counted missing.")
    ] = 0.0,
    stage: Annotated[str | None, typer.Option("--stage", envvar="EVENTSTACK_STAGE", help="Stage; default: the one deployed.")] = None,
) -> None:
    """Count events missing from, duplicated in, and unexpected in the archive.

    An object that is not gzip, or is truncated, is named and counted; the others are read all the same.

    Exit status:
    0 every stored event is archived;
    1 events are missing (every object read);
    2 a bad option, or the stage's resources not found;
    3 an archive object could not be read (the events only it held are counted missing too).
    """
    from rich.console import Console
    from rich.markup import escape

    from escore.dynamodb_store import DynamoDBEventStore
    from eventstack import resources
    from eventstack.archive import ArchiveReader, parse_time
    from eventstack.topology import TOPOLOGY
    from eventstack.verify import verify as run

    err = Console(stderr=True)
    try:
        TOPOLOGY.service(service)
        found = resources.load(stage)
        store = DynamoDBEventStore(found.event_store_table(service), resources.client("dynamodb"))
        reader = ArchiveReader(found.archive_bucket, resources.client("s3"))
        result = run(
            service, store.iter_all(), reader,
            since=parse_time(since) if since else None, until=parse_time(until) if until else None, grace=grace,
        )
    except (resources.ResourceError, KeyError, ValueError) as exc:
        err.print(f"[red]error:[/red] {escape(reason(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    for sample in result.missing_samples:
        err.print(f"missing: {sample}")
    for key, why in result.bad_objects:
        err.print(f"[red]unreadable object:[/red] {key}: {why}", soft_wrap=True)  # a key is one line
    if result.bad_lines:
        err.print(f"{result.bad_lines} archive line(s) are not envelopes")
    if result.recent:
        err.print(f"{result.recent} event(s) younger than {grace:g} s not archived yet (not counted missing)")
    print(
        f"{service}: {result.stored} events in the store, {result.archived_lines} archived in "
        f"{result.objects} objects; missing: {result.missing}, duplicated: {result.duplicated}, "
        f"unexpected: {result.unexpected}" + (f", unreadable objects: {len(result.bad_objects)}" if result.bad_objects else "")
    )
    if result.exit_code:
        raise typer.Exit(result.exit_code)
