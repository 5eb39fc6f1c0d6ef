"""The AWS query engine: Athena, in the stage's workgroup, over the Glue table of the archive.

The user's query is read in its dialect, transpiled to Athena's, and given CTEs that stand for
`events_raw` and `events` (eventstack.audit.relations), so it reads the same relations as on DuckDB.
Then: start_query_execution, poll get_query_execution (a progress line with state, elapsed time and
data scanned), page through get_query_results (the first row of the first page is the header) and
type each value by the column types of ResultSetMetadata. FAILED or CANCELLED is the query's error
(Athena's StateChangeReason), in one line.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from escore.naming import audit_database, audit_workgroup
from eventstack import sql as queries
from eventstack.audit import relations
from eventstack.audit.engine import EngineError, EngineName, ProgressFn, QueryResult
from eventstack.audit.output import plain

POLL_FIRST, POLL_MAX = 0.25, 2.0  # seconds between polls: from quick to at most this
PAGE_SIZE = 1000  # get_query_results' maximum
INTEGERS = {"tinyint", "smallint", "integer", "int", "bigint"}
FLOATS = {"double", "float", "real"}


class AthenaEngine:
    name: EngineName = "athena"

    def __init__(self, athena: Any, *, stage: str, bucket: str, poll: float = POLL_FIRST) -> None:
        self.athena = athena
        self.workgroup = audit_workgroup(stage)
        self.database = audit_database(stage)
        self.bucket = bucket
        self.poll = poll

    def statement(self, sql: str, params: dict[str, Any] | None = None, dialect: str | None = None) -> str:
        """The SQL sent to Athena for `sql`: parameters substituted, transpiled, CTEs injected."""
        text = queries.render(sql, params) if params else sql
        text = queries.transpile(text, read=dialect or "athena", write="athena")  # type: ignore[arg-type]
        return relations.inject_ctes(text, relations.athena_ctes(self.database, self.bucket), "athena")

    def query(self, sql: str, params: dict[str, Any] | None = None, *, dialect: str | None = None,
              progress: ProgressFn | None = None) -> QueryResult:
        from botocore.exceptions import ClientError

        text = self.statement(sql, params, dialect)
        try:
            started = self.athena.start_query_execution(
                QueryString=text, WorkGroup=self.workgroup, QueryExecutionContext={"Database": self.database})
            execution_id = started["QueryExecutionId"]
            try:
                execution = self._wait(execution_id, progress)
            except KeyboardInterrupt:
                self.athena.stop_query_execution(QueryExecutionId=execution_id)
                raise
            columns, rows = self._results(execution_id)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            message = str(error.get("Message", exc))
            if error.get("Code") == "InvalidRequestException" and "workgroup" in message.lower():
                raise EngineError(f"Athena workgroup {self.workgroup}: {message} (is the stage's audit stack "
                                  "deployed?)") from None
            if error.get("Code") == "InvalidRequestException":  # Athena's word for SQL it cannot take
                raise queries.QueryError(f"Athena: {error.get('Message', exc)}") from None
            raise EngineError(f"Athena ({self.workgroup}): {exc}") from None
        statistics = execution.get("Statistics", {})
        stats = {"execution_id": execution_id, "bytes_scanned": statistics.get("DataScannedInBytes"),
                 "seconds": (statistics.get("TotalExecutionTimeInMillis") or 0) / 1000}
        return QueryResult(columns, rows, stats)

    def close(self) -> None:
        """Nothing to release: each query is one execution, finished when `query` returns."""

    def _wait(self, execution_id: str, progress: ProgressFn | None) -> dict[str, Any]:
        started, delay = time.monotonic(), self.poll
        while True:
            execution: dict[str, Any] = self.athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]
            status = execution.get("Status", {})
            state = status.get("State", "QUEUED")
            scanned = execution.get("Statistics", {}).get("DataScannedInBytes") or 0
            if progress:
                progress(f"athena {execution_id}: {state} {time.monotonic() - started:.1f} s, "
                         f"{scanned / 1e6:.1f} MB scanned")
            if state == "SUCCEEDED":
                return execution
            if state in ("FAILED", "CANCELLED"):
                reason = " ".join(str(status.get("StateChangeReason") or state.lower()).split())
                raise queries.QueryError(f"Athena query {state}: {reason}")
            time.sleep(delay)
            delay = min(delay * 2, POLL_MAX)

    def _results(self, execution_id: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        columns: list[str] = []
        types: list[str] = []
        rows: list[tuple[Any, ...]] = []
        kwargs: dict[str, Any] = {"QueryExecutionId": execution_id, "MaxResults": PAGE_SIZE}
        first = True
        while True:
            page = self.athena.get_query_results(**kwargs)
            result = page.get("ResultSet", {})
            if first:
                info = result.get("ResultSetMetadata", {}).get("ColumnInfo", [])
                columns = [c.get("Label") or c["Name"] for c in info]
                types = [str(c.get("Type", "varchar")).lower() for c in info]
            data = result.get("Rows", [])
            if first:
                data = data[1:]  # a SELECT's first row is its header (only queries are sent: relations.inject_ctes)
            first = False
            for row in data:
                cells = row.get("Data", [])
                rows.append(tuple(convert(cell.get("VarCharValue"), kind) for cell, kind in zip(cells, types, strict=False)))
            token = page.get("NextToken")
            if not token:
                return columns, rows
            kwargs["NextToken"] = token


def convert(text: str | None, kind: str) -> Any:
    """An Athena value (always text, absent for NULL) as the JSON-able value its column type says."""
    if text is None:
        return None
    base = kind.split("(", 1)[0].strip()
    try:
        if base in INTEGERS:
            return int(text)
        if base in FLOATS:
            return float(text)
        if base == "decimal":
            return plain(Decimal(text))
        if base == "boolean":
            return text.lower() == "true"
        if base.startswith("timestamp"):
            return plain(_timestamp(text))
    except (ValueError, InvalidOperation):
        return text
    return text


def _timestamp(text: str) -> datetime:
    """Athena's `2026-12-01 10:00:00.123` (UTC) or `... UTC` / `... +01:00` (with time zone)."""
    value = text.strip().replace(" UTC", "+00:00").replace(" ", "T", 1)
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    head, _, rest = value.partition(".")
    if rest:  # fromisoformat wants 3 or 6 fraction digits
        digits = "".join(c for c in rest if c.isdigit())
        value = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits):]}"
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
