"""The SQL the tools run over the archive, kept once: one `<name>.sql` file each in this folder.

Every file is written in DuckDB's dialect (the local engine runs it as it is) and transpiled with
sqlglot for Athena (Trino), so there is never a second copy to keep in step. Where the dialects differ
in a way sqlglot cannot bridge, the fix goes into `transpile` here, once, with a comment saying why.

The relations the queries read, the same on both engines (docs/audit.md):

- `events_raw`: the archive as delivered, one row per archived line (duplicates included). Columns:
  the envelope's fields `event_id`, `stream_id`, `version`, `type`, `schema_version`, `service`,
  `occurred_at` (text, RFC 3339), `data` and `metadata` (JSON text); the delivery partition columns
  `year`, `month`, `day`, `hour` (text, from the key); `archive_key` (the object's key in the
  bucket) and `archived_at` (when the object was written: S3's LastModified).
- `events`: `events_raw` de-duplicated by `event_id` (the first archived copy kept), same columns.

Parameters are named `$name` (DuckDB's prepared-statement style); `render` substitutes quoted
literals for engines without named parameters (Athena's `ExecutionParameters` are positional).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Literal

Dialect = Literal["duckdb", "athena"]
SOURCE_DIALECT: Dialect = "duckdb"
HERE = Path(__file__).resolve().parent
_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


class QueryError(ValueError):
    """A query cannot be read (unknown name, a parameter missing, SQL sqlglot cannot parse)."""


@functools.cache
def source(name: str) -> str:
    """The text of `<name>.sql`, as written (DuckDB's dialect)."""
    path = HERE / f"{name}.sql"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in HERE.glob("*.sql")))
        raise QueryError(f"no query {name!r} (known: {known})")
    return path.read_text(encoding="utf-8")


def transpile(sql: str, *, write: Dialect, read: Dialect = SOURCE_DIALECT) -> str:
    """`sql` in `write`'s dialect (as it is when read == write)."""
    if read == write:
        return sql
    import sqlglot
    from sqlglot.errors import ParseError

    try:
        trees = sqlglot.parse(sql, read=read)
    except ParseError as exc:
        raise QueryError(f"cannot read the query as {read} SQL: {exc}") from None
    if write == "athena":
        trees = [tree.transform(_to_trino) for tree in trees if tree is not None]
    return ";\n".join(tree.sql(dialect=write, pretty=True) for tree in trees if tree is not None)


def _to_trino(node: Any) -> Any:
    """What sqlglot does not bridge from DuckDB to Trino (the replay plan's stream bucket):
    md5 of a varchar hashes its UTF-8 bytes (Trino's md5 takes varbinary: to_utf8), and the cast of
    '0x' || <hex> to an unsigned integer, DuckDB's hex parse, is Trino's from_base(<hex>, 16)."""
    from sqlglot import exp

    if isinstance(node, exp.MD5) and not isinstance(node.this, exp.Encode):
        return exp.MD5(this=exp.Encode(this=node.this.copy(), charset=exp.Literal.string("utf-8")))
    if isinstance(node, exp.Cast) and node.to.this == exp.DataType.Type.UBIGINT:
        text = node.this.unnest()
        if isinstance(text, exp.DPipe) and isinstance(text.this, exp.Literal) and text.this.this == "0x":
            return exp.FromBase(this=text.expression.copy().transform(_to_trino), expression=exp.Literal.number(16))
    return node


def text(name: str, dialect: Dialect) -> str:
    """Query `name` in `dialect`."""
    return transpile(source(name), write=dialect)


def literal(value: Any) -> str:
    """A SQL literal for `value` (str, int, float, bool, None)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def render(sql: str, params: dict[str, Any]) -> str:
    """`sql` with every `$name` replaced by the literal of params[name]."""

    def one(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in params:
            raise QueryError(f"the query needs a value for ${key}")
        return literal(params[key])

    return _PARAM.sub(one, sql)
