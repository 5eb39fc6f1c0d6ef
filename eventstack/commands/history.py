"""`eventstack history STREAM_ID [--at T]`: a stream's events and its aggregate's state as of T (docs/audit.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from eventstack.commands.trace import (
    NOT_ARCHIVED,
    CacheOption,
    EngineOption,
    FormatOption,
    StageOption,
    check_choices,
    console,
    fail,
    print_json,
    progress_to,
    run_or_exit,
    sources,
)


def history(
    stream_id: Annotated[str, typer.Argument(help="The stream, e.g. post-<uuid> or user-<uuid>.")],
    at: Annotated[str | None, typer.Option(
        "--at", help="The instant (RFC 3339, or a prefix such as 2026-11-26; naive is UTC): the events that "
                     "occurred until then, and the state they fold to. Default: all of them.")] = None,
    engine: EngineOption = "duckdb",
    format: FormatOption = "table",
    cache_dir: CacheOption = None,
    stage: StageOption = None,
) -> None:
    """A stream's events, and its aggregate's state as of --at, folded by the service's own code.

    Reads the archive and the owning service's event store (for what is not archived yet).

    Exit status:
    0 done;
    1 the archive, the store or the stage's resources cannot be read;
    2 a bad option, a bad --at, or a stream no service owns.
    """
    from eventstack.audit import history as histories

    err = console(stderr=True)
    check_choices(engine, format)
    try:  # the arguments are checked before any AWS call
        owner = histories.owner_of(stream_id)
        moment = histories.instant(at)
    except histories.HistoryError as exc:
        raise fail(err, str(exc), 2) from None
    with sources(engine, stage, cache_dir, err) as (found, archive, dynamodb):
        result = run_or_exit(err, lambda: histories.history(
            stream_id, at=moment, engine=archive, dynamodb=dynamodb, resources=found, progress=progress_to(err)))
    if format == "json":
        print_json(result.to_json())
        if not result.events and not result.later:
            err.print(no_events(stream_id, owner.service), soft_wrap=True, markup=False, highlight=False)
        return
    print_table(result, console(), owner.service)


def no_events(stream_id: str, service: str) -> str:
    return f"stream {stream_id} has no events (searched the archive and the {service} event store)"


def print_table(result: Any, out: Any, service: str) -> None:
    """The events as `eventstack query` prints rows (eventstack.audit.output), then the state as JSON."""
    import orjson

    from eventstack.audit import output
    from eventstack.audit.engine import QueryResult

    when = f"as of {result.at}" if result.at else "now"
    if result.events:
        print(f"{result.stream_id} ({service}), {when}", flush=True)
        rows = [(e.version, e.type, e.schema_version, e.occurred_at, e.archived_at or NOT_ARCHIVED, e.source, e.data)
                for e in result.events]
        output.write(QueryResult(["v", "type", "schema", "occurred_at", "archived_at", "source", "data"], rows),
                     "table")
    if result.later:
        out.print(f"{result.later} later event(s) not folded", highlight=False)
    if result.state is None:
        if result.later:
            out.print(f"state {when}: did not exist yet", highlight=False, markup=False)
        else:
            out.print(no_events(result.stream_id, service), highlight=False, markup=False)
        return
    out.print(f"state {when}:", highlight=False, markup=False)
    print(orjson.dumps(result.state, option=orjson.OPT_INDENT_2).decode(), flush=True)
