"""The fold phase of `eventstack replay --engine local`: the plan (eventstack.replay_plan), then a
process pool over its buckets, each folded by escore.replay_file as the replay-worker Lambda folds it.

`run_local(replayer, record, cuts)` makes the plan (or, resumed, finds its manifest), then folds the
buckets whose done marker is missing: with `--workers 1` in this process, with this process's
clients (so an in-process moto, the tests', sees it); with more, in a pool of `workers` processes
(the `spawn` context: no fork of a process with threads and open connections), each with its own
boto3 clients (eventstack.resources.client: the same AWS_ENDPOINT_URL, region and profile). A bucket
that fails raises in its process; the others go on, and the error is reported after them, so a rerun
(`--resume`) folds only what is not done. Problems the plan finds (a line that is not an envelope, an
unreadable object) stop the replay before any fold. The plan's files are local (eventstack.replay_plan)
and removed when the fold ends; a resumed run plans again (the same objects and cuts: the same files)
and folds the files without a done marker.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from escore.replay_file import FileResult, PlanItem, done_key, fold_plan_file, s3_opener
from eventstack import replay_tables as tables
from eventstack.replay_plan import Plan, build_plan, default_files, local_path, remove

if TYPE_CHECKING:
    from eventstack.replay import Replayer

MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))


def run_local(replayer: Replayer, record: dict[str, Any], cuts: dict[str, dict[str, str]]) -> bool:
    """Plan, then fold every bucket not done; True if every bucket is done without problems."""
    r, o = replayer, replayer.options
    files = int(record.get("files") or 0) or o.files or default_files(_listed_bytes(r, record), o.workers)
    plan = build_plan(r, record, cuts, files)
    try:
        return _run(r, record, plan)
    finally:
        remove(plan)


def _run(r: Replayer, record: dict[str, Any], plan: Plan) -> bool:
    summary, dynamodb, table = r.summary, r.clients.dynamodb, record["table"]
    archive = summary.archive
    archive.objects, archive.compressed_bytes = plan.objects, plan.compressed_bytes
    archive.lines_scanned = archive.events_read = plan.archive_lines
    archive.duplicates = plan.lines - plan.unique - _bad_lines(plan.problems)
    archive.events, archive.partitions = plan.unique, len(plan.items)
    summary.events_read += plan.archive_lines
    summary.duplicates += archive.duplicates
    r.hooks("archive-done")
    if plan.problems:
        summary.problems += plan.problems
        r.progress.note("problems in the archive: nothing folded, nothing switched")
        return False
    todo = [item for item in plan.items
            if tables.get_state(dynamodb, table, done_key(item.index, item.count)) is None]
    if len(todo) < len(plan.items):
        r.progress.note(f"{len(plan.items) - len(todo)} of {len(plan.items)} file(s) already done")
    r.progress.phase("folding and writing", plan.unique)
    results, errors = [], []
    for outcome in _fold(r, plan, todo):
        if isinstance(outcome, BaseException):
            errors.append(outcome)
            continue
        results.append(outcome)
        _account(r, outcome)
    r.hooks("folded")
    if errors:
        raise errors[0]
    r.hooks("written")
    return all(result.ok for result in results)


def _bad_lines(problems: list[str]) -> int:
    for problem in problems:
        head, _, rest = problem.partition(" line(s) that are not envelopes")
        if rest and head.isdigit():
            return int(head)
    return 0


def _listed_bytes(r: Replayer, record: dict[str, Any]) -> int:
    from eventstack.replay_plan import objects_of

    return sum(o.size for o in objects_of(r, record))


def _account(r: Replayer, result: FileResult) -> None:
    s = r.summary
    s.applied += result.folded
    s.skipped += result.skipped
    s.duplicates += result.duplicates
    s.failed += result.failed
    s.failures += result.failures[: max(0, 10 - len(s.failures))]
    s.problems += result.problems
    if result.status == "already-done":
        r.progress.note(f"file {result.index}/{result.count}: already done")


def _fold(r: Replayer, plan: Plan, items: list[PlanItem]) -> Iterator[FileResult | BaseException]:
    o = r.options
    if o.workers <= 1 or len(items) <= 1:
        s3_open = s3_opener(r.clients.s3, r.resources.archive_bucket)

        def open_key(key: str) -> Any:
            path = local_path(plan, key)
            return open(path, "rb") if path is not None else s3_open(key)

        for item in items:
            # (as it happens: a crash leaves the summary counting the writes made)
            yield fold_plan_file(item, r.clients.dynamodb, open_key, spec=r.spec, write_workers=o.apply_workers,
                                 stats=r.summary.writes, progress=r.progress.advance)
        return
    local = {item.index: {key: str(path) for key in item.keys if (path := local_path(plan, key)) is not None}
             for item in items}
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes=min(o.workers, len(items))) as pool:
        jobs = [(item.model_dump(), local[item.index], o.apply_workers) for item in items]
        for outcome in pool.imap_unordered(_child, jobs):
            if isinstance(outcome, dict):
                result = FileResult(**outcome)
                r.summary.writes.written += result.written
                r.summary.writes.already += result.already
                r.progress.advance(result.events)
                yield result
            else:
                yield RuntimeError(outcome)


def _child(job: tuple[dict[str, Any], dict[str, str], int]) -> dict[str, Any] | str:
    """One bucket, in a pool process: its own clients, the local plan files where they are."""
    raw, local, write_workers = job
    try:
        from eventstack.resources import client

        item = PlanItem.model_validate(raw)
        s3_open = s3_opener(client("s3"), item.bucket)

        def open_key(key: str) -> Any:
            path = local.get(key)
            return open(path, "rb") if path and Path(path).is_file() else s3_open(key)

        return fold_plan_file(item, client("dynamodb"), open_key, write_workers=write_workers).as_dict()
    except Exception as exc:  # reported by the parent, after the other buckets
        return f"file {raw.get('index')}/{raw.get('count')}: {type(exc).__name__}: {exc}"
