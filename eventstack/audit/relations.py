"""How each engine binds the relations of eventstack.sql (`events_raw`, `events`) to the archive.

DuckDB: the first time a cached object is read, DuckDB's JSON reader (read_json with explicit
columns, gzip, hive partitioning from the path) copies it to a Parquet file beside it, with its
`archive_key` and `archived_at` (the manifest's LastModified); `events_raw` is a temporary view over
those copies (a query then reads columns, not gzip JSON). `events` is de-duplicated from them once
per change of the cache and kept as one more Parquet file (`events_copy_sql`), so a query over
`events` does not repeat the de-duplication (bench/results/query.md).
Athena: CTEs injected into the user's query with sqlglot, over the Glue table AUDIT_TABLE, whose
`archive_key` comes from the hidden `"$path"` column and `archived_at` from `"$file_modified_time"`.
On both, `events` is eventstack/sql/events.sql (transpiled for Athena), written once.

A line is *undecodable* when it is not a JSON object with the envelope's identifying fields
(`event_id`, `stream_id`, `type` text, `version` an integer): both engines leave such lines out of
`events_raw` (the DuckDB engine counts them and says so on stderr).
"""

from __future__ import annotations

from typing import Any

from escore.naming import AUDIT_TABLE, AUDIT_VIEW
from eventstack import sql as queries

# The envelope's fields as the JSON reader types them (DuckDB's types; JSON is text with JSON functions).
ENVELOPE_COLUMNS: dict[str, str] = {
    "event_id": "VARCHAR", "stream_id": "VARCHAR", "version": "BIGINT", "type": "VARCHAR",
    "schema_version": "BIGINT", "service": "VARCHAR", "occurred_at": "VARCHAR", "data": "JSON", "metadata": "JSON",
}
PARTITIONS = ("year", "month", "day", "hour")
COLUMNS = [*ENVELOPE_COLUMNS, *PARTITIONS, "archive_key", "archived_at"]  # events_raw and events, in order
IDENTIFYING = ("event_id", "stream_id", "type", "version")  # a line without them is undecodable


def decoded(alias: str = "") -> str:
    """The condition that keeps a decoded line (see the module's docstring)."""
    return " AND ".join(f"{alias}{name} IS NOT NULL" for name in IDENTIFYING)


MAX_LINE_BYTES = 64 * 1024 * 1024


def read_json_sql(files: list[str]) -> str:
    """DuckDB: the rows of the cached objects `files` (paths), every line, undecodable ones as NULLs."""
    columns = "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in ENVELOPE_COLUMNS.items()) + "}"
    hive = "{'service': 'VARCHAR', " + ", ".join(f"'{p}': 'VARCHAR'" for p in PARTITIONS) + "}"
    listed = "[" + ", ".join(queries.literal(path) for path in files) + "]"
    return (f"read_json({listed}, columns = {columns}, format = 'newline_delimited', compression = 'gzip', "
            f"hive_partitioning = true, hive_types = {hive}, ignore_errors = true, "
            f"maximum_object_size = {MAX_LINE_BYTES})")


def columnar_sql(source: str, key: str, archived_at: Any, target: str) -> str:
    """DuckDB: copy one cached object (`source`, gzip JSON Lines) to `target` (Parquet) with every
    events_raw column, undecodable lines kept as NULLs (counted, then left out by `bind_duckdb`)."""
    envelope = ", ".join(ENVELOPE_COLUMNS)
    partitions = ", ".join(PARTITIONS)
    return (f"COPY (SELECT {envelope}, {partitions}, {queries.literal(key)} AS archive_key, "
            f"CAST({queries.literal(str(archived_at))} AS TIMESTAMP) AS archived_at FROM {read_json_sql([source])}) "
            f"TO {queries.literal(target)} (FORMAT parquet, COMPRESSION zstd)")


def bind_duckdb(con: Any, columnar: list[str], events_copy: str | None = None) -> None:
    """Create `events_raw` and `events` in DuckDB connection `con` over the Parquet copies `columnar`
    (see `columnar_sql`). None: the same relations, empty. `events_copy`: a Parquet file written by
    `events_copy_sql` from these same copies, read as `events` instead of de-duplicating again."""
    if columnar:
        listed = "[" + ", ".join(queries.literal(path) for path in columnar) + "]"
        body = f"SELECT {', '.join(COLUMNS)} FROM read_parquet({listed}, hive_partitioning = false) WHERE {decoded()}"
    else:
        typed = ", ".join(f"CAST(NULL AS {ENVELOPE_COLUMNS.get(name, 'VARCHAR')}) AS {name}"
                          for name in COLUMNS if name != "archived_at")
        body = f"SELECT {typed}, CAST(NULL AS TIMESTAMP) AS archived_at WHERE false"
    con.execute(f"CREATE OR REPLACE TEMP VIEW {AUDIT_TABLE} AS {body}")
    events = queries.text(AUDIT_VIEW, "duckdb")
    if events_copy:
        events = f"SELECT {', '.join(COLUMNS)} FROM read_parquet({queries.literal(events_copy)}, hive_partitioning = false)"
    con.execute(f"CREATE OR REPLACE TEMP VIEW {AUDIT_VIEW} AS {events}")


def events_copy_sql(target: str) -> str:
    """DuckDB: write `events` (as bound, from events.sql) to the Parquet file `target`, in stream order,
    so a stream's rows sit together (its lookups skip the other row groups)."""
    return (f"COPY (SELECT * FROM {AUDIT_VIEW} ORDER BY stream_id, version) TO {queries.literal(target)} "
            "(FORMAT parquet, COMPRESSION zstd)")


def athena_ctes(database: str, bucket: str) -> dict[str, str]:
    """Athena: the CTEs that stand for `events_raw` and `events` (Athena's dialect), in order."""
    envelope = ", ".join(ENVELOPE_COLUMNS)
    partitions = ", ".join(PARTITIONS)
    prefix = f"s3://{bucket}/"
    raw = (f'SELECT {envelope}, {partitions}, substr("$path", {len(prefix) + 1}) AS archive_key, '
           f'"$file_modified_time" AS archived_at FROM "{database}"."{AUDIT_TABLE}" WHERE {decoded()}')
    return {AUDIT_TABLE: raw, AUDIT_VIEW: queries.text(AUDIT_VIEW, "athena")}


def inject_ctes(sql: str, ctes: dict[str, str], dialect: str) -> str:
    """`sql` (one statement in `dialect`) with `ctes` added before its own WITH entries. A CTE the
    query defines itself under one of those names is left as the query wrote it (its own wins)."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError

    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except ParseError as exc:
        raise queries.QueryError(f"cannot read the query as {dialect} SQL: {exc}") from None
    if len(statements) != 1:
        raise queries.QueryError(f"one SQL statement at a time (got {len(statements)})")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise queries.QueryError("only queries (SELECT, WITH ... SELECT, set operations) run over the archive")
    own = tree.args.get("with_")
    own_ctes = list(own.expressions) if own is not None else []
    taken = {cte.alias_or_name.lower() for cte in own_ctes}
    added = [exp.CTE(this=sqlglot.parse_one(body, read=dialect), alias=exp.TableAlias(this=exp.to_identifier(name)))
             for name, body in ctes.items() if name.lower() not in taken]
    recursive = bool(own.args.get("recursive")) if own is not None else False
    tree.set("with_", exp.With(expressions=[*added, *own_ctes], recursive=recursive))
    return tree.sql(dialect=dialect, pretty=True)
