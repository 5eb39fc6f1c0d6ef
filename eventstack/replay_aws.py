"""`eventstack replay --engine aws`: the plan made by Athena, folded by the Step Functions Distributed Map.

`run_map(replayer, record, cuts, workers=...)` runs the fold step of a replay on AWS (the record is made
and the cuts fixed by `eventstack.replay.Replayer`; the catch-up, switch and hand-off run after it, as
for the local engine):

1. Size: the archive objects of the projection's sources in the window (up to the record's
   `max_keys`) are summed; N = ceil(estimated events / EVENTS_PER_FILE) buckets, so that one bucket's
   fold fits well inside a Lambda's 15 minutes.
2. Plan: eventstack/sql/replay_plan.sql, rendered with N and transpiled for Athena, reads
   `plan_lines` = the archive's `events_lines` table (every line as archived, `"$path"` as its
   archive key) pruned to the sources, the window's years and the listed objects; UNLOAD writes
   its `line`s as GZIP text, partitioned by `bucket`, each file sorted by (stream_id, version).
   UNLOAD takes at most 100 partitions: N > 100 runs one UNLOAD per 100 buckets (each scans the window
   again; the cost model, bench/replay_cost.py, counts it). The stream records up to the cuts (not
   in Athena's reach) are read here and written per bucket, sorted, as one more file of the bucket;
   the worker's merge keeps one copy per (stream, version), the archive's, as the SQL does.
3. Manifest: the bucket files listed and grouped (UNLOAD may write several files per bucket), one
   item per bucket in the worker's event format (lambdas/replay_worker/handler.py), `manifest.json`.
4. Fold: one execution of the replay state machine (infra/replay.py) with `max_concurrency` =
   `workers` (the target table's write budget, capped by N and the construct's ceiling); polled until
   it ends, the Map Run's counts shown as progress.
5. Check: a failed execution, failed items (their bucket, keys and error, from the child
   executions' inputs), or a bucket without its done marker raise `ReplayError`, naming them. The
   children's results (the Map's ResultWriter files) are added to the replay's summary; a bucket whose
   fold reported problems makes run_map answer False (nothing switched, the problems in the summary).
   Running the replay again folds only the buckets not done.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from escore import naming
from escore.replay_file import done_key, stream_bucket
from eventstack import sql
from eventstack.replay import ReplayError
from eventstack.replay_streams import read_to_cut

# The benchmark archive's compressed bytes per archived line (bench/results/replay.json: 95,002,807
# gzip bytes for 1,050,024 lines); the plan's size estimate divides the window's bytes by it.
BYTES_PER_LINE = 90.5
# Events per bucket: the worker's 15 minutes at ~2,200 events/s, a margin of 25x under the local fold
# rate measured (bench/results/replay.json, 54,497 events/s), for DynamoDB round trips and a cold start.
EVENTS_PER_FILE = 2_000_000
UNLOAD_MAX_PARTITIONS = 100  # Athena: "the maximum number of partitions that can be used with UNLOAD is 100"
MAX_CONCURRENCY_CEILING = 1000  # infra/replay.py
STREAM_FILE = "stream-records.gz"
MANIFEST = "manifest.json"
RESULTS = "results"
_RESULT_FILE = re.compile(r"/SUCCEEDED_\d+\.json$")
_BUCKET_DIR = re.compile(r"(?:^|/)bucket=(\d+)/")
_DONE_QUERY = {"SUCCEEDED"}
_FAILED_QUERY = {"FAILED", "CANCELLED"}


@dataclass
class AwsClients:
    athena: Any
    s3: Any
    stepfunctions: Any
    dynamodb: Any
    kinesis: Any

    @classmethod
    def default(cls, replayer: Any) -> AwsClients:
        from eventstack.resources import client

        clients = replayer.clients
        return cls(client("athena"), clients.s3, client("stepfunctions"), clients.dynamodb, clients.kinesis)


@dataclass(frozen=True)
class Target:
    """Where things are on AWS for one stage (escore.naming's rules, the account and region)."""

    stage: str
    account: str
    region: str
    archive_bucket: str

    @property
    def results_bucket(self) -> str:
        return naming.audit_results_bucket(self.stage, self.account, self.region)

    @property
    def workgroup(self) -> str:
        return naming.audit_workgroup(self.stage)

    @property
    def database(self) -> str:
        return naming.audit_database(self.stage)

    @property
    def state_machine_arn(self) -> str:
        name = naming.physical(self.stage, naming.replay_state_machine())
        return f"arn:aws:states:{self.region}:{self.account}:stateMachine:{name}"


@dataclass
class Plan:
    """A replay's plan: its prefix in the results bucket, bucket count, and files by bucket."""

    prefix: str
    count: int
    files: dict[int, list[str]] = field(default_factory=dict)
    scanned_bytes: int = 0

    @property
    def manifest_key(self) -> str:
        return self.prefix + MANIFEST

    @property
    def results_prefix(self) -> str:
        """Where the Map's ResultWriter puts the children's results (infra/replay.py)."""
        return self.prefix + RESULTS


def run_id(record: dict[str, Any]) -> str:
    """The run's name in the plan prefix: the record's start, compact (20261201T120000)."""
    started = datetime.fromisoformat(record["started_at"]).astimezone(UTC)
    return started.strftime("%Y%m%dT%H%M%S")


def bucket_count(window_bytes: int, *, bytes_per_line: float = BYTES_PER_LINE, per_file: int = EVENTS_PER_FILE) -> int:
    return max(1, math.ceil(window_bytes / bytes_per_line / per_file))


def _literal(value: str) -> str:
    return sql.literal(value)


def plan_lines_select(target: Target, sources: list[str], max_keys: dict[str, str], years: tuple[int, int]) -> str:
    """`plan_lines(line, origin, archive_key)` over the archive's lines table, pruned by partitions."""
    first, last = years
    per_service = " OR ".join(
        f"(service = {_literal(s)} AND \"$path\" <= {_literal(f's3://{target.archive_bucket}/{max_keys[s]}')})"
        for s in sources
        if s in max_keys
    ) or "FALSE"
    return (
        f'SELECT line, 0 AS origin, "$path" AS archive_key FROM "{target.database}"."{naming.AUDIT_LINES_TABLE}" '
        f"WHERE year BETWEEN {_literal(f'{first:04d}')} AND {_literal(f'{last:04d}')} AND ({per_service})"
    )


def unload_sql(plan_select: str, *, buckets: int, low: int, high: int, location: str) -> str:
    """One UNLOAD of buckets low..high of the plan (replay_plan.sql over `plan_select`) to `location`."""
    import sqlglot
    from sqlglot import exp

    athena = sql.transpile(sql.render(sql.source("replay_plan"), {"buckets": buckets}), write="athena")
    tree = sqlglot.parse_one(athena, read="athena")
    assert isinstance(tree, exp.Select)
    with_ = tree.args.get("with_") or tree.args.get("with")
    assert isinstance(with_, exp.With), "replay_plan.sql starts with a WITH clause"
    cte = exp.CTE(this=sqlglot.parse_one(plan_select, read="athena"), alias=exp.TableAlias(this=exp.to_identifier("plan_lines")))
    with_.expressions.insert(0, cte)
    bucket, line = tree.expressions  # (bucket, line): the partition column must come last for UNLOAD
    tree.set("expressions", [line, bucket])
    bucket_expr = bucket.this if isinstance(bucket, exp.Alias) else bucket
    tree = tree.where(exp.Between(this=bucket_expr.copy(), low=exp.Literal.number(low), high=exp.Literal.number(high)))
    select = tree.sql(dialect="athena", comments=False)
    return (
        f"UNLOAD ({select}) TO {_literal(location)} "
        "WITH (format = 'TEXTFILE', compression = 'GZIP', partitioned_by = ARRAY['bucket'])"
    )


class AwsReplay:
    """The steps of run_map, each its own method (tests drive them with stubbed clients)."""

    def __init__(self, replayer: Any, clients: AwsClients, target: Target, *, poll_seconds: float = 5.0) -> None:
        self.replayer = replayer
        self.clients = clients
        self.target = target
        self.progress = replayer.progress
        self.poll_seconds = poll_seconds

    @property
    def projection(self) -> Any:
        return self.replayer.projection

    # 1. size ------------------------------------------------------------------------------------
    def window(self, record: dict[str, Any]) -> tuple[int, tuple[int, int]]:
        """The window's archived bytes and its first and last year (partition pruning)."""
        total, years = 0, []
        since = record.get("since")
        first_hour = f"year={since[:4]}/month={since[5:7]}/day={since[8:10]}/hour={since[11:13]}/" if since else ""
        paginator = self.clients.s3.get_paginator("list_objects_v2")
        max_keys = record.get("max_keys", {})
        for service in self.projection.sources:
            if service not in max_keys:
                continue
            last = max_keys[service]
            prefix = f"{self.replayer.topology.archive_prefix}service={service}/"
            for page in paginator.paginate(Bucket=self.target.archive_bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key > last or key[len(prefix):] < first_hour:
                        continue
                    total += int(obj["Size"])
                    years.append(int(key[len(prefix) + 5 : len(prefix) + 9]))
        if not years:
            return 0, (datetime.now(UTC).year, datetime.now(UTC).year)
        return total, (min(years), max(years))

    # 2. plan ------------------------------------------------------------------------------------
    def unload(self, record: dict[str, Any], plan: Plan, years: tuple[int, int]) -> None:
        select = plan_lines_select(self.target, list(self.projection.sources), record.get("max_keys", {}), years)
        chunks = [(low, min(low + UNLOAD_MAX_PARTITIONS, plan.count) - 1) for low in range(0, plan.count, UNLOAD_MAX_PARTITIONS)]
        for n, (low, high) in enumerate(chunks):
            location = f"s3://{self.target.results_bucket}/{plan.prefix}q{n}/"
            query = unload_sql(select, buckets=plan.count, low=low, high=high, location=location)
            self.progress.note(f"Athena: plan buckets {low}-{high} of {plan.count} (UNLOAD {n + 1}/{len(chunks)})")
            plan.scanned_bytes += self._query(query)

    def _query(self, query: str) -> int:
        athena = self.clients.athena
        started = athena.start_query_execution(
            QueryString=query,
            WorkGroup=self.target.workgroup,
            QueryExecutionContext={"Database": self.target.database},
        )
        query_id = started["QueryExecutionId"]
        while True:
            execution = athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
            state = execution["Status"]["State"]
            scanned = int(execution.get("Statistics", {}).get("DataScannedInBytes", 0))
            if state in _DONE_QUERY:
                self.progress.note(f"Athena query {query_id}: {scanned / 1e9:.2f} GB scanned")
                return scanned
            if state in _FAILED_QUERY:
                reason = execution["Status"].get("StateChangeReason", "no reason given")
                raise ReplayError(f"the plan's Athena query {query_id} {state.lower()}: {reason}")
            time.sleep(self.poll_seconds)

    def stream_files(self, plan: Plan, cuts: dict[str, dict[str, str]]) -> int:
        """The stream records up to the cuts, bucketed and sorted like the plan: one file per bucket."""
        by_bucket: dict[int, list[tuple[str, int, bytes]]] = defaultdict(list)
        read = 0
        for stream, shards in cuts.items():
            for shard_id, cut in shards.items():
                for record in read_to_cut(self.clients.kinesis, stream, shard_id, cut):
                    data = bytes(record["Data"]).rstrip(b"\n")
                    try:
                        envelope = orjson.loads(data)
                        stream_id, version = str(envelope["stream_id"]), int(envelope["version"])
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                        continue  # not an envelope: the local fold counts it (summary.bad_records)
                    by_bucket[stream_bucket(stream_id, plan.count)].append((stream_id, version, data))
                    read += 1
        for index, lines in by_bucket.items():
            lines.sort(key=lambda t: (t[0], t[1]))
            body = gzip.compress(b"".join(line + b"\n" for _, _, line in lines))
            key = f"{plan.prefix}bucket={index}/{STREAM_FILE}"
            self.clients.s3.put_object(Bucket=self.target.results_bucket, Key=key, Body=body)
        if read:
            self.progress.note(f"{read} stream records up to the cuts added to {len(by_bucket)} bucket(s)")
        return read

    # 3. manifest --------------------------------------------------------------------------------
    def list_files(self, plan: Plan) -> None:
        files: dict[int, list[str]] = defaultdict(list)
        paginator = self.clients.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.target.results_bucket, Prefix=plan.prefix):
            for obj in page.get("Contents", []):
                found = _BUCKET_DIR.search(obj["Key"][len(plan.prefix):])
                if found and int(obj["Size"]) > 0:
                    files[int(found.group(1))].append(obj["Key"])
        # Athena's files first, the stream records last: the worker's merge keeps the archive's copy
        plan.files = {k: sorted(v, key=lambda key: (key.endswith(STREAM_FILE), key)) for k, v in files.items()}

    def items(self, record: dict[str, Any], plan: Plan, cuts: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
        return [
            {
                "projection": self.projection.name,
                "folds": self.projection.folds,
                "stage": self.target.stage,
                "table": record["table"],
                "bucket": self.target.results_bucket,
                "keys": plan.files.get(index, []),
                "index": index,
                "count": plan.count,
                "cuts": cuts,
                "require_start": record.get("since") is None,
                "origins": None,
            }
            for index in range(plan.count)
        ]

    def write_manifest(self, items: list[dict[str, Any]], plan: Plan) -> None:
        self.clients.s3.put_object(
            Bucket=self.target.results_bucket, Key=plan.manifest_key, Body=json.dumps(items).encode(),
            ContentType="application/json",
        )

    # 4. fold ------------------------------------------------------------------------------------
    def start(self, record: dict[str, Any], plan: Plan, workers: int) -> str:
        concurrency = max(1, min(workers, plan.count, MAX_CONCURRENCY_CEILING))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        name = f"{self.projection.name}-{run_id(record)}-{stamp}"[:80]
        started = self.clients.stepfunctions.start_execution(
            stateMachineArn=self.target.state_machine_arn,
            name=name,
            input=json.dumps({
                "plan": {"manifest_key": plan.manifest_key, "results_prefix": plan.results_prefix,
                         "projection": self.projection.name,
                         "table": record["table"], "run": run_id(record), "count": plan.count},
                "max_concurrency": concurrency,
            }),
        )
        arn: str = started["executionArn"]
        self.progress.note(f"Step Functions: {plan.count} bucket(s), up to {concurrency} at once: {arn}")
        return arn

    def wait(self, execution_arn: str, count: int) -> dict[str, Any]:
        sfn, shown = self.clients.stepfunctions, 0
        self.progress.phase("fold (Step Functions)", count)
        while True:
            execution: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
            counts = self._counts(execution_arn)
            finished = int(counts.get("succeeded", 0)) + int(counts.get("failed", 0))
            if finished > shown:
                self.progress.advance(finished - shown)
                shown = finished
            if execution["status"] != "RUNNING":
                return execution
            time.sleep(self.poll_seconds)

    def _map_run(self, execution_arn: str) -> str | None:
        runs = self.clients.stepfunctions.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
        return str(runs[0]["mapRunArn"]) if runs else None

    def _counts(self, execution_arn: str) -> dict[str, Any]:
        map_run = self._map_run(execution_arn)
        if map_run is None:
            return {}
        counts: dict[str, Any] = self.clients.stepfunctions.describe_map_run(mapRunArn=map_run)["itemCounts"]
        return counts

    # 5. check -----------------------------------------------------------------------------------
    def results(self, plan: Plan) -> list[dict[str, Any]]:
        """The succeeded children's outputs (the worker's FileResult), from the ResultWriter's files."""
        found: list[dict[str, Any]] = []
        paginator = self.clients.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.target.results_bucket, Prefix=plan.results_prefix + "/"):
            for obj in page.get("Contents", []):
                if not _RESULT_FILE.search(obj["Key"]):
                    continue
                body = self.clients.s3.get_object(Bucket=self.target.results_bucket, Key=obj["Key"])["Body"].read()
                for child in json.loads(body):
                    output = child.get("Output")
                    if isinstance(output, str) and output:
                        found.append(json.loads(output))
        return found

    def account(self, results: list[dict[str, Any]]) -> bool:
        """Add the buckets' results to the replay's summary (as the local engine does); False on problems."""
        summary, ok = self.replayer.summary, True
        for result in results:
            summary.events_read += int(result.get("lines", 0))
            summary.applied += int(result.get("folded", 0))
            summary.skipped += int(result.get("skipped", 0))
            summary.duplicates += int(result.get("duplicates", 0))
            summary.failed += int(result.get("failed", 0))
            summary.failures += list(result.get("failures", []))[: max(0, 10 - len(summary.failures))]
            summary.writes.written += int(result.get("written", 0))
            summary.writes.already += int(result.get("already", 0))
            if result.get("status") == "problems":
                ok = False
                summary.problems += [f"bucket {result.get('index')}/{result.get('count')}: {p}"
                                     for p in result.get("problems", [])] or [f"bucket {result.get('index')}: problems"]
        return ok

    def check(self, execution: dict[str, Any], record: dict[str, Any], plan: Plan) -> bool:
        arn = execution["executionArn"]
        if execution["status"] != "SUCCEEDED":
            raise ReplayError(
                f"the replay execution {arn} ended {execution['status']}: "
                f"{execution.get('error', 'no error')}: {execution.get('cause', 'no cause given')}"
            )
        counts = self._counts(arn)
        bad = int(counts.get("failed", 0)) + int(counts.get("timedOut", 0)) + int(counts.get("aborted", 0))
        if bad:
            raise ReplayError(f"{bad} of {plan.count} bucket(s) failed after their retries: "
                              + "; ".join(self._failed_items(arn)))
        if not self.account(self.results(plan)):
            self.progress.note("problems in the plan's buckets: their shared items and markers are not written")
            return False
        missing = [k for k in range(plan.count)
                   if self._marker(record["table"], k, plan.count) is None]
        if missing:
            shown = ", ".join(str(k) for k in missing[:20])
            raise ReplayError(
                f"{len(missing)} of {plan.count} bucket(s) have no done marker (their fold reported "
                f"problems; nothing of theirs is switched to): {shown}. The child executions' outputs "
                f"say why: {arn}"
            )
        return True

    def _failed_items(self, execution_arn: str, limit: int = 10) -> list[str]:
        sfn, found = self.clients.stepfunctions, list[str]()
        map_run = self._map_run(execution_arn)
        if map_run is None:
            return ["no Map Run found"]
        for status in ("FAILED", "TIMED_OUT", "ABORTED"):
            for child in sfn.list_executions(mapRunArn=map_run, statusFilter=status).get("executions", []):
                if len(found) >= limit:
                    return found
                detail = sfn.describe_execution(executionArn=child["executionArn"])
                item = json.loads(detail.get("input") or "{}")
                found.append(
                    f"bucket {item.get('index')} ({len(item.get('keys', []))} file(s)) {status.lower()}: "
                    f"{detail.get('error', status)}: {detail.get('cause', '')}".rstrip(": ")
                )
        return found or ["(the failed children were not listed)"]

    def _marker(self, table: str, index: int, count: int) -> Any:
        pk, sk = done_key(index, count)
        answer = self.clients.dynamodb.get_item(
            TableName=table, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
        )
        return answer.get("Item")

    # the whole --------------------------------------------------------------------------------
    def run(self, record: dict[str, Any], cuts: dict[str, dict[str, str]], workers: int) -> bool:
        self.progress.phase("plan (Athena)", None)
        window_bytes, years = self.window(record)
        count = int(record.get("files") or 0) or bucket_count(window_bytes)  # the record's, if it fixed one
        plan = Plan(naming.replay_plan_prefix(self.projection.name, run_id(record)), count)
        self.progress.note(f"{window_bytes / 1e9:.2f} GB archived in the window: {plan.count} bucket(s)")
        self.unload(record, plan, years)
        self.stream_files(plan, cuts)
        self.list_files(plan)
        items = self.items(record, plan, cuts)
        self.write_manifest(items, plan)
        execution = self.wait(self.start(record, plan, workers), plan.count)
        return self.check(execution, record, plan)


def target_of(replayer: Any, sts: Any = None) -> Target:
    from eventstack.resources import client, region

    resources = replayer.resources
    account = str((sts or client("sts")).get_caller_identity()["Account"])
    return Target(resources.stage, account, region() or "us-east-1", resources.archive_bucket)


def run_map(replayer: Any, record: dict[str, Any], cuts: dict[str, dict[str, str]], *, workers: int,
            clients: AwsClients | None = None, target: Target | None = None, poll_seconds: float = 5.0) -> bool:
    """Plan with Athena, fold with the Distributed Map. True when every bucket is done (the orchestration,
    eventstack.replay, then marks the fold done); False when a bucket's fold reported problems (they are
    in replayer.summary.problems: nothing is switched); ReplayError naming what failed otherwise."""
    if workers < 1:
        raise ReplayError(f"--workers {workers}: the Map needs at least one at a time")
    return AwsReplay(
        replayer, clients or AwsClients.default(replayer), target or target_of(replayer), poll_seconds=poll_seconds
    ).run(record, cuts, workers)
