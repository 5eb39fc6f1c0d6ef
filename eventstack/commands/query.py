"""`eventstack query "SQL"`: SQL over the event archive, locally (DuckDB) or on Athena (docs/audit.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from eventstack.commands import reason

Engine = Annotated[str, typer.Option("--engine", help="duckdb: a local copy of the archive (synced by ETag); "
                                                      "athena: the stage's workgroup and Glue table.")]
Format = Annotated[str, typer.Option("--format", help="table, json (an array of row objects) or csv.")]


def query(
    sql: Annotated[str, typer.Argument(help="One SQL statement over the relations events and events_raw.")],
    engine: Engine = "duckdb",
    fmt: Format = "table",
    dialect: Annotated[str | None, typer.Option(
        help="The dialect the SQL is written in (duckdb or athena); default: the engine's own.")] = None,
    cache_dir: Annotated[str | None, typer.Option(
        "--cache-dir", help="The DuckDB engine's archive cache (default: under ~/.cache/eventstack/).")] = None,
    stage: Annotated[str | None, typer.Option(
        "--stage", envvar="EVENTSTACK_STAGE", help="Stage (dev, prod, ...); default: the one deployed.")] = None,
) -> None:
    """Run SQL over the event archive. Rows go to stdout, progress to stderr.

    Exit status: 0 done; 1 the engine cannot run (no bucket, the runtime or AWS not reachable);
    2 a bad option or a query that cannot be read or fails.
    """
    from rich.console import Console
    from rich.markup import escape

    from eventstack import resources
    from eventstack.audit import output
    from eventstack.audit.engine import EngineError, open_engine
    from eventstack.sql import QueryError

    err = Console(stderr=True, soft_wrap=True)
    if engine not in ("duckdb", "athena"):
        raise typer.BadParameter("--engine takes duckdb or athena")
    if fmt not in output.FORMATS:
        raise typer.BadParameter("--format takes table, json or csv")
    if dialect not in (None, "duckdb", "athena"):
        raise typer.BadParameter("--dialect takes duckdb or athena")

    def progress(line: str) -> None:
        err.print(escape(line), style="dim" if not line.startswith("warning") else "yellow", highlight=False)

    try:
        runner = open_engine(engine, stage=stage, cache_dir=cache_dir)  # type: ignore[arg-type]
        try:
            result = runner.query(sql, dialect=dialect, progress=progress)
        finally:
            runner.close()
    except QueryError as exc:
        err.print(f"[red]error:[/red] {escape(reason(exc))}", highlight=False)
        raise typer.Exit(2) from None
    except (EngineError, resources.ResourceError) as exc:
        err.print(f"[red]error:[/red] {escape(reason(exc))}", highlight=False)
        raise typer.Exit(1) from None
    output.write(result, fmt)
    if fmt == "table":
        err.print(f"{len(result.rows)} row(s)", style="dim", highlight=False)
