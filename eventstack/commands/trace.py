"""`eventstack trace CORRELATION_ID`: every event one request caused, across services, in causal order (docs/audit.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from eventstack.commands import reason

EngineOption = Annotated[str, typer.Option(
    "--engine", help="Where the archive is queried: duckdb (a local cache of the archive's objects) or athena.")]
FormatOption = Annotated[str, typer.Option("--format", help="table or json.")]
CacheOption = Annotated[str | None, typer.Option(
    "--cache-dir", help="The DuckDB engine's archive cache (default: under ~/.cache/eventstack/).")]
StageOption = Annotated[
    str | None, typer.Option("--stage", envvar="EVENTSTACK_STAGE", help="Stage; default: the one deployed.")]
ENGINES = ("duckdb", "athena")
FORMATS = ("table", "json")
NOT_ARCHIVED = "not archived yet"


def trace(
    correlation_id: Annotated[str, typer.Argument(help="The request's X-Correlation-Id.")],
    engine: EngineOption = "duckdb",
    format: FormatOption = "table",
    cache_dir: CacheOption = None,
    stage: StageOption = None,
) -> None:
    """Every event one request caused, across services, in causal order, with when each was archived.

    Reads the archive and every service's event store (for what is not archived yet).

    Exit status:
    0 done (an unknown id is an empty trace);
    1 the archive, a store or the stage's resources cannot be read;
    2 a bad option.
    """
    from eventstack.audit import trace as tracing

    err = console(stderr=True)
    check_choices(engine, format)
    with sources(engine, stage, cache_dir, err) as (found, archive, dynamodb):
        result = run_or_exit(err, lambda: tracing.trace(correlation_id, engine=archive, dynamodb=dynamodb,
                                                          resources=found, progress=progress_to(err)))
    if format == "json":
        print_json(result.to_json())
    else:
        print_table(result, console())
    for service in result.stats.get("stores_not_in_stage", ()):
        err.print(f"warning: the stage lists no event store for service {service}: not searched",
                  style="yellow", markup=False, highlight=False)
    if not result.entries:
        err.print(f"no event carries correlation id {correlation_id!r} (searched the archive and every event store)",
                  soft_wrap=True, markup=False, highlight=False)


def print_table(result: Any, out: Any) -> None:
    """The entries as `eventstack query` prints rows (eventstack.audit.output), a child indented under its parent."""
    from eventstack.audit import output
    from eventstack.audit.engine import QueryResult

    if result.entries:
        rows = [(n, "  " * e.depth + ("└ " if e.depth else "") + e.type, e.service, e.stream_id, e.version,
                 e.occurred_at, e.archived_at or NOT_ARCHIVED, e.source) for n, e in enumerate(result.entries, start=1)]
        print(f"correlation id {result.correlation_id}", flush=True)
        output.write(QueryResult(["#", "event", "service", "stream", "v", "occurred_at", "archived_at", "source"],
                                 rows), "table")
    stats = result.stats
    if stats:
        out.print(f"{len(result.entries)} event(s): {stats.get('archived', 0)} archived, "
                  f"{stats.get('stored', 0) - stats.get('both', 0)} in a store only; "
                  f"{stats.get('store_items_scanned', 0):,} store items scanned; {stats.get('seconds', 0)} s",
                  highlight=False, markup=False)


# shared with eventstack.commands.history
def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=stderr)


def check_choices(engine: str, format: str) -> None:
    if engine not in ENGINES:
        raise typer.BadParameter(f"--engine takes {' or '.join(ENGINES)}, not {engine!r}")
    if format not in FORMATS:
        raise typer.BadParameter(f"--format takes {' or '.join(FORMATS)}, not {format!r}")


def fail(err: Any, message: str, code: int) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    return typer.Exit(code)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def progress_to(err: Any) -> Callable[[str], None]:
    """The engine's progress lines on stderr, as `eventstack query` shows them (warnings in yellow)."""
    return lambda line: err.print(escape(line), style="yellow" if line.startswith("warning") else "dim",
                                  highlight=False)


def print_json(document: dict[str, Any]) -> None:
    import orjson

    print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


@contextmanager
def sources(engine: str, stage: str | None, cache_dir: str | None, err: Any) -> Iterator[tuple[Any, Any, Any]]:
    """The stage's resources, the archive's engine and a DynamoDB client; closed afterwards."""
    from eventstack import resources
    from eventstack.audit.trace import ArchiveUnavailable

    try:
        found = resources.load(stage)
    except resources.ResourceError as exc:  # no stage found, or the local runtime does not answer
        raise fail(err, reason(exc), 1) from None
    try:
        archive = open_archive(engine, found, cache_dir)
    except ArchiveUnavailable as exc:
        raise fail(err, str(exc), 1) from None
    try:
        yield found, archive, resources.client("dynamodb")
    finally:
        archive.close()


def open_archive(engine: str, found: Any, cache_dir: str | None) -> Any:
    """The query engine of the archive (eventstack.audit.engine.open_engine); ArchiveUnavailable if it cannot open."""
    from eventstack.audit.engine import open_engine
    from eventstack.audit.trace import ArchiveUnavailable

    try:
        return open_engine(engine, found=found, cache_dir=cache_dir)  # type: ignore[arg-type]
    except Exception as exc:  # any engine's failure to open (S3, Glue, Athena): one line
        line = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise ArchiveUnavailable(f"the archive cannot be opened ({engine}): {line}") from None


def run_or_exit(err: Any, work: Callable[[], Any]) -> Any:
    """`work()`, its failures one line: a source unreachable exit 1, a bad input exit 2."""
    from botocore.exceptions import BotoCoreError, ClientError

    from eventstack.audit.history import HistoryError
    from eventstack.audit.live import StoreUnavailable
    from eventstack.audit.trace import ArchiveUnavailable
    from eventstack.resources import ResourceError

    try:
        return work()
    except HistoryError as exc:
        raise fail(err, str(exc), 2) from None
    except (ArchiveUnavailable, StoreUnavailable, ResourceError, BotoCoreError, ClientError) as exc:
        raise fail(err, reason(exc), 1) from None
