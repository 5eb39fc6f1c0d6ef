"""Fault scenarios on the local runtime, each accounted event by event (tests/e2e/fault_accounting.py).

Each scenario starts a fresh local runtime in this process (its AWS emulation in a child process, as
`eventstack local` runs it) with its fault settings, sends commands over HTTP, injects its fault,
drains (POST /_local/drain), and then accounts for every event of the event stores at every
consumer: relays, projection mappings, archives. The figures go to a JSON file:

    .venv/bin/python -m tests.e2e.fault_scenarios --out bench/results/reliability.json [--only NAME ...]

tests/e2e/test_fault_accounting.py runs the same scenarios and asserts the accounting.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from escore.dynamodb_store import DynamoDBEventStore
from escore.envelope import format_timestamp, new_id
from eventstack.local.faults import FaultSettings
from eventstack.local.runtime import LocalConfig, LocalRuntime
from eventstack.local.workers import default_api_workers
from tests.e2e.fault_accounting import Account, account_for
from tests.e2e.local_stack import REPO, Answer, LocalStack
from tests.integration.projector_harness import envelope

DRAIN_TIMEOUT = 180.0
STALL_SECONDS = 30.0
TAGS = ("alpha", "beta", "gamma", "delta", "eps")


@dataclass
class Run:
    runtime: LocalRuntime
    stack: LocalStack
    notes: dict[str, Any] = field(default_factory=dict)  # what the scenario measured beyond the accounting
    users: list[str] = field(default_factory=list)
    posts: dict[str, int] = field(default_factory=dict)  # post id -> its version
    commands: Counter[int] = field(default_factory=Counter)  # answers by status
    drains: list[float] = field(default_factory=list)  # seconds each POST /_local/drain took

    def drain(self) -> dict[str, Any]:
        started = time.monotonic()
        status = self.stack.drain(timeout=DRAIN_TIMEOUT)
        self.drains.append(time.monotonic() - started)
        return status


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: str  # what is injected, in words
    settings: FaultSettings = field(default_factory=FaultSettings)
    drive: Callable[[Run], None] = lambda run: traffic(run)
    after_drain: Callable[[Run], None] = lambda run: None


@dataclass
class Result:
    scenario: str
    fault: str
    settings: dict[str, Any]
    figures: dict[str, Any]
    accounts: list[Account]
    notes: dict[str, Any]

    @property
    def balanced(self) -> bool:
        return all(a.balanced for a in self.accounts)

    def account(self, consumer: str) -> Account:
        return next(a for a in self.accounts if a.consumer == consumer)

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "fault": self.fault, "settings": self.settings, "figures": self.figures,
                "balanced": self.balanced, "accounts": [a.as_dict() for a in self.accounts], "notes": self.notes}


# -- traffic ---------------------------------------------------------------------------------
def _ok(run: Run, answer: Answer) -> Answer:
    run.commands[answer.status] += 1
    assert 200 <= answer.status < 300, answer
    return answer


def traffic(run: Run, *, users: int = 5, posts: int = 30, edits: int = 8, deletes: int = 5, renames: int = 3,
            workers: int = 4) -> None:
    """Commands over HTTP from `workers` clients at once: users, posts with hashtags, edits, deletes."""
    stack, seed = run.stack, len(run.posts) + len(run.users)

    def register(i: int) -> str:
        body = {"handle": "u_" + uuid.uuid4().hex[:12], "display_name": f"user {seed + i}"}
        return str(_ok(run, stack.call("POST", "/users", body)).body["user_id"])

    def create(i: int) -> str:
        tags = " ".join(f"#{TAGS[(seed + i * k) % len(TAGS)]}" for k in (1, 2))
        author = run.users[(seed + i) % len(run.users)]
        return str(_ok(run, stack.call("POST", "/posts", {"author_id": author, "text": f"post {seed + i} {tags}"})
                       ).body["post_id"])

    def edit(post: str) -> None:
        body = {"text": f"edited #{TAGS[len(post) % len(TAGS)]}", "expected_version": run.posts[post]}
        run.posts[post] = int(_ok(run, stack.call("PATCH", f"/posts/{post}", body)).body["version"])

    def delete(post: str) -> None:
        run.posts[post] = int(_ok(run, stack.call("DELETE", f"/posts/{post}")).body["version"])

    def rename(user: str) -> None:
        _ok(run, stack.call("PATCH", f"/users/{user}", {"display_name": f"renamed {user[:8]}"}))

    with ThreadPoolExecutor(workers) as pool:
        run.users += list(pool.map(register, range(users)))
        created = list(pool.map(create, range(posts)))
        run.posts.update(dict.fromkeys(created, 1))
        list(pool.map(edit, created[:edits]))
        list(pool.map(delete, created[edits:edits + deletes]))
        list(pool.map(rename, run.users[:renames]))


# -- scenario-specific faults ----------------------------------------------------------------
def poison(run: Run) -> None:
    """Between two rounds of traffic: a newer writer's event (schema 99) in the posts store, an
    undecodable record put straight on the posts stream, and an event item holding no envelope in
    the profiles store (its relay dead-letters it; drained before the second round, so that the
    relay's failing batch holds only it)."""
    traffic(run)
    status = run.stack.status()
    run.stack.client("dynamodb").put_item(TableName=status["tables"]["profiles_events"], Item={
        "stream_id": {"S": f"user-{new_id()}"}, "version": {"N": "1"}, "kind": {"S": "event"},
        "envelope": {"S": "{not an envelope"}})
    store = DynamoDBEventStore(status["tables"]["posts_events"], run.stack.client("dynamodb"))
    post_id = new_id()
    too_new = envelope(f"post-{post_id}", 1, "PostCreated",
                       {"post_id": post_id, "author_id": run.users[0], "text": "from a newer writer", "tags": []},
                       format_timestamp(datetime.now(UTC)), schema_version=99)
    store.append(too_new.stream_id, 0, [too_new])
    run.stack.client("kinesis").put_record(StreamName=status["streams"]["posts"], Data=b"not an envelope\n",
                                           PartitionKey="poison")
    run.notes["poison"] = {"too_new_event": too_new.event_id, "undecodable_records": 1, "undecodable_store_items": 1}
    run.drain()
    traffic(run, users=1)


def archive_outage(run: Run) -> None:
    """Every archive PutObject fails (past the retry duration) for the first round of traffic, then S3
    recovers for the second."""
    traffic(run)
    run.drain()  # Firehose gives up on the first round's records meanwhile
    run.notes["outage_seconds"] = round(run.drains[-1], 1)
    run.runtime.faults.settings = replace(run.runtime.faults.settings, archive_put_failure=0.0)
    traffic(run, users=1)


def rounds(run: Run) -> None:
    """Three rounds of traffic, each drained: more Firehose deliveries (each one PutObject per service)."""
    for i in range(3):
        traffic(run, users=2 if i else 4, posts=12, edits=4, deletes=2, renames=1)
        run.drain()


def verify_archives(run: Run) -> None:
    """`eventstack archive verify SERVICE` against the runtime, as a user runs it."""
    env = {**os.environ, "EVENTSTACK_LOCAL_URL": run.stack.api, "AWS_ENDPOINT_URL": run.stack.aws,
           "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "COLUMNS": "200"}  # rich wraps its lines at 80 columns off a terminal, mid event id
    run.notes["verify"] = {}
    for service in ("posts", "profiles"):
        done = subprocess.run([sys.executable, "-m", "eventstack", "archive", "verify", service], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
        found = re.search(r"missing: (\d+)", done.stdout)
        run.notes["verify"][service] = {
            "exit_code": done.returncode,
            "missing": int(found.group(1)) if found else None,
            "named": [line.split("missing: ", 1)[1] for line in done.stderr.splitlines() if line.startswith("missing: ")],
            "summary": done.stdout.strip() or done.stderr.strip(),
        }


def stall(run: Run) -> None:
    """Four clients send commands (each with its own Idempotency-Key) all along; 1.5 s in, while the
    pipeline is busy, the emulation's process is stopped (SIGSTOP) for STALL_SECONDS, then continued
    (SIGCONT). Each command answered 503 is then retried with its key, after its Retry-After."""
    traffic(run)
    pid = run.runtime.emulation_pid
    assert pid is not None
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()
    sending = threading.Event()
    sending.set()
    started = time.monotonic()

    def send(text: str, key: str, author: str) -> dict[str, Any]:
        sent = time.monotonic()
        answer = run.stack.call("POST", "/posts", {"author_id": author, "text": text},
                                headers={"Idempotency-Key": key}, timeout=90)
        return {"status": answer.status, "error": answer.error, "seconds": time.monotonic() - sent,
                "retry_after": answer.headers.get("retry-after"), "text": text, "key": key, "author": author,
                "sent_at": sent - started, "answered_at": time.monotonic() - started,
                "post_id": (answer.body or {}).get("post_id")}

    def client(i: int) -> None:
        n = 0
        while sending.is_set():
            n += 1
            found = send(f"stall {i}.{n} {uuid.uuid4().hex[:8]}", uuid.uuid4().hex, run.users[i % len(run.users)])
            with lock:
                answers.append(found)

    clients = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(1.5)
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic() - started
    local_routes = probe_local_routes(run)  # the runtime's own routes, while the emulation is stopped
    time.sleep(max(STALL_SECONDS - (time.monotonic() - started - stopped), 0))
    os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic() - started
    time.sleep(2.0)
    sending.clear()
    for thread in clients:
        thread.join(120)
    # sent while the emulation was stopped (a request sent just before may have been written and answer 201)
    during = [a for a in answers if stopped <= a["sent_at"] and a["answered_at"] <= resumed]
    caught_up = responsive(run)  # the emulation works off what queued up during the stall first
    refused = [a for a in answers if a["status"] == 503]
    time.sleep(max((float(a["retry_after"] or 1) for a in refused), default=0.0))  # as Retry-After asks
    with ThreadPoolExecutor(4) as pool:
        again = list(pool.map(lambda a: send(a["text"], a["key"], a["author"]), refused))
    retried = []
    for first, second in zip(refused, again, strict=True):
        retried.append({"first": first["status"], "again": second["status"], "error": second["error"]})
        first["final"] = second
    run.notes["stall"] = {
        "seconds": round(resumed - stopped, 1),
        "commands": len(answers),
        "answered_during": len(during),
        "answered_during_503": sum(1 for a in during if a["status"] == 503),
        "answered_during_503_with_retry_after": sum(1 for a in during if a["status"] == 503 and a["retry_after"]),
        "other_answers_during": sorted({f"{a['status']} {a['error']}" for a in during if a["status"] != 503}),
        "first_503_after_stop_seconds": round(min((a["answered_at"] - max(a["sent_at"], stopped)
                                                   for a in during if a["status"] == 503), default=0.0), 1),
        "slowest_answer_seconds": round(max((a["seconds"] for a in answers), default=0.0), 1),
        "local_routes_during": local_routes,
        "seconds_until_responsive_after_resume": round(caught_up + 2.0, 1),
        "retried_with_key": Counter(f"{r['first']} -> {r['again']} {r['error'] or ''}".strip() for r in retried),
        "answers": answers,
    }
    traffic(run, users=1)


def responsive(run: Run, within: float = 1.0, give_up: float = 120.0) -> float:
    """Wait until GET /_local/status (which reads every DLQ's count from the emulation) answers within
    `within` seconds; return how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < give_up:
        sent = time.monotonic()
        try:
            if run.stack.call("GET", "/_local/status", timeout=10).status == 200 and time.monotonic() - sent < within:
                break
        except OSError:
            pass
        time.sleep(0.2)
    return time.monotonic() - started


def probe_local_routes(run: Run) -> dict[str, str]:
    """GET /_local/status (5 s allowed) and POST /_local/drain?timeout=2 (10 s allowed): what they
    answer while the emulation does not."""
    found = {}
    for name, method, path, allowed in (("status", "GET", "/_local/status", 5.0),
                                        ("drain_timeout_2", "POST", "/_local/drain?timeout=2", 10.0)):
        sent = time.monotonic()
        try:
            answer = run.stack.call(method, path, timeout=allowed)
            found[name] = f"{answer.status} after {time.monotonic() - sent:.1f} s"
        except OSError:
            found[name] = f"no answer within {allowed:g} s"
    return found


def commands_applied_once(run: Run) -> None:
    """Per command of the stall: how many posts the store holds for it (its text is unique). A 503 is
    an unknown outcome (the write may have reached the stopped emulation and run when it continued);
    its retry with the same Idempotency-Key must answer the first outcome, never make a second post."""
    notes = run.notes["stall"]
    answers = notes.pop("answers")
    created = Counter(e["data"].get("text") for e in run.stack.event_store("posts") if e["type"] == "PostCreated")
    final = [a.get("final", a) for a in answers]
    notes["answered_503_but_committed"] = sum(1 for a in answers if a["status"] == 503 and created[a["text"]])
    notes["commands_with_two_posts"] = sum(1 for a in answers if created[a["text"]] > 1)
    notes["commands_2xx_without_post"] = sum(1 for a in final if 200 <= a["status"] < 300 and not created[a["text"]])
    notes["commands_finally_2xx"] = sum(1 for a in final if 200 <= a["status"] < 300)


SCENARIOS = [
    Scenario("crash", "a handler fails part-way through a batch (P 0.3 per invocation)",
             FaultSettings(crash=0.3, seed=11)),
    Scenario("duplicates", "every batch delivered twice with P 0.5 (Lambda and Firehose)",
             FaultSettings(duplicates=0.5, seed=12)),
    Scenario("poison", "a schema-99 event in the posts store; an undecodable record on the posts stream; "
             "an event item with no envelope in the profiles store", drive=poison, after_drain=verify_archives),
    Scenario("kinesis-throttle", "each PutRecords record throttled with P 0.3 (partial answers)",
             FaultSettings(kinesis_throttle=0.3, seed=14)),
    Scenario("archive-flaky", "archive PutObject fails with P 0.5 (S3 503 SlowDown); retry duration 300 s",
             FaultSettings(archive_put_failure=0.5, seed=15), drive=rounds, after_drain=verify_archives),
    Scenario("archive-outage", "every archive PutObject fails for the first round (retry duration 2 s), then S3 recovers",
             FaultSettings(archive_put_failure=1.0, archive_retry_seconds=2.0, seed=16), drive=archive_outage,
             after_drain=verify_archives),
    Scenario("poller-kill", "a poller thread dies part-way through a delivery with P 0.2, restarted from its checkpoint",
             FaultSettings(poller_kill=0.2, seed=17)),
    Scenario("all-at-once", "crash 0.3, duplicates 0.3, poller kill 0.1, PutRecords throttle 0.3, archive PutObject "
             "failure 0.3, together", FaultSettings(crash=0.3, duplicates=0.3, poller_kill=0.1, kinesis_throttle=0.3,
                                                    archive_put_failure=0.3, seed=18),
             drive=lambda run: (traffic(run), traffic(run, users=2))[-1]),
    Scenario("stall", f"the emulation's process stopped {STALL_SECONDS:g} s (SIGSTOP) while 4 clients send, then SIGCONT",
             drive=stall, after_drain=commands_applied_once),
]


def scenario(name: str) -> Scenario:
    return next(s for s in SCENARIOS if s.name == name)


# -- running one -----------------------------------------------------------------------------
def figures_of(status: dict[str, Any], run: Run, drain_seconds: float) -> dict[str, Any]:
    mappings, deliveries = status["mappings"], status["firehose"]
    return {
        "commands": dict(run.commands),
        "duplicates_delivered": status["faults"]["duplicated_batches"],
        "crashes_injected": status["faults"]["crashed_invocations"],
        "retries": sum(m["function_errors"] + m["partial_failures"] for m in mappings)
        + sum(d["failed_attempts"] for d in deliveries),
        "dlq_messages": {m["name"]: m["dlq"] for m in mappings if m["dlq"]},
        "pollers_killed": sum(w["poller_kills"] for w in [*mappings, *deliveries]),
        "pollers_restarted": sum(w["poller_restarts"] for w in [*mappings, *deliveries]),
        "put_records_throttled": run.runtime.faults.throttled,
        "archive_puts_failed": run.runtime.faults.archive_puts_failed,
        "archive_records_given_up": sum(d["records_given_up"] for d in deliveries),
        "drain_seconds": round(drain_seconds, 2),  # every drain of the scenario, summed
        "drains": len(run.drains),
    }


def run_scenario(chosen: Scenario) -> Result:
    # The API in worker processes, as `eventstack local` runs it; the functions behind the mappings
    # (where the faults act) in this process.
    runtime = LocalRuntime(LocalConfig(port=0, aws_port=0, firehose_interval=1, faults=chosen.settings,
                                       api_workers=default_api_workers()))
    runtime.start()
    try:
        assert runtime.emulation.process is not None
        # LocalStack's HTTP and AWS helpers, over this in-process runtime (never its stop(): the
        # process it holds is the emulation's, which runtime.stop() ends).
        stack = LocalStack(runtime.emulation.process, runtime.api_url, runtime.aws_endpoint_url)
        run = Run(runtime, stack)
        started = time.monotonic()
        chosen.drive(run)
        status = run.drain()
        chosen.after_drain(run)
        _observed, accounts = account_for(stack)
        figures = figures_of(status, run, sum(run.drains))
        figures["seconds"] = round(time.monotonic() - started, 1)
        settings = {k: v for k, v in vars(chosen.settings).items() if v != getattr(FaultSettings(), k)}
        return Result(chosen.name, chosen.fault, settings, figures, accounts, run.notes)
    finally:
        runtime.stop(drain_timeout=0)


# -- the table ---------------------------------------------------------------------------------
def _per_source(result: Result, kind: str, field_name: str) -> str:
    values = {}
    for service in ("posts", "profiles"):
        found = {getattr(a, field_name) for a in result.accounts if a.kind == kind and a.source == service}
        values[service] = "/".join(str(v) for v in sorted(found))
    return f"{values['posts']} + {values['profiles']}"


def markdown(results: list[Result]) -> str:
    """One row per scenario; "a + b" is posts + profiles; a consumer's figure appears once when every
    consumer of that kind agrees (else "x/y": the distinct values)."""
    head = ("| scenario | fault injected | events in store | relayed once (relay DLQ) | applied by each projection "
            "mapping | in each projection mapping's DLQ | archived (under errors/) | duplicates delivered | retries "
            "| lost | double-applied | time to drain |")
    lines = [head, "|" + "---|" * 12]
    for r in results:
        stores = {a.source: a.store for a in r.accounts if a.kind == "relay"}
        relay_dlq = sum(a.dlq + a.other for a in r.accounts if a.kind == "relay")
        other = any(a.other for a in r.accounts if a.kind == "projection")
        dlq = _per_source(r, "projection", "dlq") + (
            f" (+ {_per_source(r, 'projection', 'other')} not store events)" if other else "")
        errors = sum(a.dlq for a in r.accounts if a.kind == "archive")
        lines.append(" | ".join([
            f"| {r.scenario}", r.fault, f"{stores['posts']} + {stores['profiles']}",
            f"{_per_source(r, 'relay', 'applied')} ({relay_dlq})", _per_source(r, "projection", "applied"), dlq,
            f"{_per_source(r, 'archive', 'applied')} ({errors})", str(r.figures["duplicates_delivered"]),
            str(r.figures["retries"]), str(sum(a.lost for a in r.accounts)),
            str(sum(a.double_applied for a in r.accounts)), f"{r.figures['drain_seconds']:.1f} s |",
        ]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "reliability.json")
    parser.add_argument("--only", nargs="*", choices=[s.name for s in SCENARIOS], default=None)
    args = parser.parse_args(argv)
    results = []
    for chosen in SCENARIOS:
        if args.only and chosen.name not in args.only:
            continue
        started = time.monotonic()
        result = run_scenario(chosen)
        results.append(result)
        print(f"{chosen.name}: {'balanced' if result.balanced else 'NOT BALANCED'} in {time.monotonic() - started:.0f} s",
              file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                                    "scenarios": [r.as_dict() for r in results]}, indent=2, default=str) + "\n")
    print(markdown(results))
    return 0 if all(r.balanced for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
