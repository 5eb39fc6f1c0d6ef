"""The relations' SQL: events.sql in both dialects, the Athena CTEs, their injection into a user's query,
and `events` de-duplicating `events_raw` (first archived copy kept), on DuckDB in memory."""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlglot

from eventstack import sql as queries
from eventstack.audit import relations

pytestmark = pytest.mark.unit

CTES = relations.athena_ctes("eventstack_prod", "eventstack-prod-archive-1-us-east-1")


def cte_names(sql: str) -> list[str]:
    tree = sqlglot.parse_one(sql, read="athena")
    return [cte.alias for cte in tree.args["with_"].expressions]


def test_events_sql_selects_every_column_in_both_dialects() -> None:
    for dialect in ("duckdb", "athena"):
        tree = sqlglot.parse_one(queries.text("events", dialect), read=dialect)  # type: ignore[arg-type]
        assert [s.alias_or_name for s in tree.selects] == relations.COLUMNS


def test_athena_events_raw_takes_key_and_time_from_hidden_columns() -> None:
    raw = CTES["events_raw"]
    assert '"$path"' in raw and '"$file_modified_time" AS archived_at' in raw
    assert 'FROM "eventstack_prod"."events_raw"' in raw
    # s3://<bucket>/ is 5 + len(bucket) + 1 characters: the key starts right after
    assert f"substr(\"$path\", {len('s3://eventstack-prod-archive-1-us-east-1/') + 1})" in raw
    assert [s.alias_or_name for s in sqlglot.parse_one(raw, read="athena").selects] == relations.COLUMNS


def test_inject_puts_the_relations_before_the_users_own_ctes() -> None:
    sql = relations.inject_ctes(
        "WITH mine AS (SELECT type FROM events) SELECT type, count(*) FROM mine GROUP BY type", CTES, "athena")
    assert cte_names(sql) == ["events_raw", "events", "mine"]
    assert "ROW_NUMBER() OVER (PARTITION BY event_id" in sql


def test_a_users_cte_named_like_a_relation_wins() -> None:
    sql = relations.inject_ctes("WITH events AS (SELECT 1 AS n) SELECT n FROM events", CTES, "athena")
    assert cte_names(sql) == ["events_raw", "events"]
    own = sqlglot.parse_one(sql, read="athena").args["with_"].expressions[1]
    assert own.this.sql(dialect="athena") == "SELECT 1 AS n"


def test_set_operations_get_the_ctes_too() -> None:
    sql = relations.inject_ctes("SELECT event_id FROM events UNION ALL SELECT event_id FROM events_raw", CTES, "athena")
    assert cte_names(sql) == ["events_raw", "events"]


@pytest.mark.parametrize(("sql", "says"), [
    ("SELECT FROM WHERE (", "cannot read the query as athena SQL"),
    ("SELECT 1; SELECT 2", "one SQL statement at a time (got 2)"),
    ("DROP TABLE events_raw", "only queries"),
])
def test_what_cannot_be_injected_is_a_query_error(sql: str, says: str) -> None:
    with pytest.raises(queries.QueryError, match=says.replace("(", r"\(").replace(")", r"\)")):
        relations.inject_ctes(sql, CTES, "athena")


def test_duckdb_sql_read_as_athena() -> None:
    out = queries.transpile("SELECT metadata->>'$.correlation_id' AS c FROM events", read="duckdb", write="athena")
    assert "JSON_EXTRACT_SCALAR(metadata, '$.correlation_id')" in out


def test_events_keeps_the_first_archived_copy() -> None:
    import duckdb

    con = duckdb.connect()
    later, earlier = datetime(2026, 12, 1, 11), datetime(2026, 12, 1, 10)
    columns = ", ".join(relations.COLUMNS)
    con.execute(f"CREATE TEMP TABLE events_raw ({', '.join(f'{c} VARCHAR' for c in relations.COLUMNS[:-1])}, "
                "archived_at TIMESTAMP)")
    rows = [("e1", "later-key", later), ("e1", "earlier-key", earlier), ("e2", "b", later), ("e2", "a", later)]
    for event_id, key, at in rows:
        values = {c: None for c in relations.COLUMNS} | {"event_id": event_id, "archive_key": key, "archived_at": at}
        con.execute(f"INSERT INTO events_raw ({columns}) VALUES ({', '.join('?' for _ in values)})", list(values.values()))
    kept = con.execute(f"SELECT event_id, archive_key FROM ({queries.text('events', 'duckdb')}) ORDER BY 1").fetchall()
    assert kept == [("e1", "earlier-key"), ("e2", "a")]  # earliest archived_at, then the key


def test_empty_binding_has_the_columns_and_no_rows() -> None:
    import duckdb

    con = duckdb.connect()
    relations.bind_duckdb(con, [])
    for name in ("events_raw", "events"):
        cursor = con.execute(f"SELECT * FROM {name}")
        assert [d[0] for d in cursor.description] == relations.COLUMNS
        assert cursor.fetchall() == []
    kinds = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE events_raw)").fetchall())
    assert kinds["version"] == "BIGINT" and kinds["archived_at"] == "TIMESTAMP" and kinds["data"] == "JSON"
