"""Every fault scenario of tests/e2e/fault_scenarios.py, asserted: at every consumer (relay, projection
mapping, archive) the store's events split exactly into applied and dead-lettered, none lost, none
applied twice; and each fault was really injected and did what it should. The figures of each run
are written as JSON under the test's tmp path (the whole set: `python -m tests.e2e.fault_scenarios`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from eventstack.topology import TOPOLOGY
from tests.e2e.fault_scenarios import SCENARIOS, Result, Run, Scenario, run_scenario, traffic
from tests.integration.projector_harness import scan

pytestmark = pytest.mark.e2e


def projections(result: Result) -> list[str]:
    return [a.consumer for a in result.accounts if a.kind == "projection"]


def check_crash(result: Result) -> None:
    assert result.figures["crashes_injected"] > 0
    assert result.figures["retries"] >= result.figures["crashes_injected"]
    assert not result.figures["dlq_messages"]  # injected crashes never use up retries


def check_duplicates(result: Result) -> None:
    assert result.figures["duplicates_delivered"] > 0
    assert not result.figures["dlq_messages"]


def check_poison(result: Result) -> None:
    too_new = result.notes["poison"]["too_new_event"]
    for name in projections(result):
        account = result.account(name)
        if account.source == "posts":  # the schema-99 event and the undecodable record, each alone
            assert (account.dlq, account.other) == (1, 1), account
            assert result.figures["dlq_messages"][name] == 2
            assert account.applied == account.store - 1
        else:
            assert (account.dlq, account.other) == (0, 0), account
    archive = result.account("archive:posts")
    assert archive.applied == archive.store and archive.other == 1  # the undecodable record under errors/
    relay = result.account("posts-publisher")
    assert relay.applied == relay.store  # the schema-99 event is relayed like any other
    relay = result.account("profiles-publisher")  # the item with no envelope: dead-lettered alone
    assert (relay.applied, relay.dlq, relay.other) == (relay.store, 0, 1)
    assert result.figures["dlq_messages"]["profiles-publisher"] == 1
    assert too_new and result.notes["verify"]["posts"]["exit_code"] == 0  # the schema-99 event is archived too


def check_kinesis_throttle(result: Result) -> None:
    assert result.figures["put_records_throttled"] > 0
    for service in ("posts", "profiles"):
        relay = result.account(f"{service}-publisher")
        assert relay.applied == relay.store and relay.double_applied == 0  # each event once on Kinesis


def check_archive_flaky(result: Result) -> None:
    assert result.figures["archive_puts_failed"] > 0
    assert result.figures["archive_records_given_up"] == 0  # retried, then delivered
    for service, found in result.notes["verify"].items():
        assert (found["exit_code"], found["missing"]) == (0, 0), found
        assert result.account(f"archive:{service}").applied == result.account(f"archive:{service}").store


def check_archive_outage(result: Result) -> None:
    given_up = result.figures["archive_records_given_up"]
    assert given_up > 0
    assert sum(result.account(f"archive:{s}").dlq for s in ("posts", "profiles")) == given_up
    for service, found in result.notes["verify"].items():
        archive = result.account(f"archive:{service}")
        assert 0 < archive.dlq < archive.store  # the first round under errors/, the second archived
        assert (found["exit_code"], found["missing"]) == (1, archive.dlq), found
        assert found["named"] and all(" v" in line for line in found["named"])
    assert all(result.account(name).applied == result.account(name).store for name in projections(result))


def check_poller_kill(result: Result) -> None:
    assert result.figures["pollers_killed"] > 0
    assert result.figures["pollers_restarted"] == result.figures["pollers_killed"]
    assert not result.figures["dlq_messages"]


def check_all_at_once(result: Result) -> None:
    figures = result.figures
    assert figures["crashes_injected"] and figures["duplicates_delivered"] and figures["pollers_killed"]
    assert figures["put_records_throttled"] and figures["archive_puts_failed"]
    assert not figures["dlq_messages"] and figures["archive_records_given_up"] == 0


def check_stall(result: Result) -> None:
    stall = result.notes["stall"]
    assert stall["seconds"] >= 30, stall
    assert stall["answered_during"] > 0, stall
    assert stall["answered_during_503"] == stall["answered_during_503_with_retry_after"] == stall["answered_during"], stall
    assert stall["first_503_after_stop_seconds"] < 15, stall  # the API's own timeouts, not the stall, bound it
    assert stall["commands_with_two_posts"] == stall["commands_2xx_without_post"] == 0, stall
    assert stall["commands_finally_2xx"] > 0, stall
    # the runtime's own routes answer on time while the emulation is stopped (their DLQ counts unknown)
    assert stall["local_routes_during"]["status"].startswith("200 "), stall["local_routes_during"]


CHECKS: dict[str, Callable[[Result], None]] = {
    "crash": check_crash,
    "duplicates": check_duplicates,
    "poison": check_poison,
    "kinesis-throttle": check_kinesis_throttle,
    "archive-flaky": check_archive_flaky,
    "archive-outage": check_archive_outage,
    "poller-kill": check_poller_kill,
    "all-at-once": check_all_at_once,
    "stall": check_stall,
}


def test_every_scenario_has_its_checks() -> None:
    assert sorted(CHECKS) == sorted(s.name for s in SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_the_store_is_applied_plus_dead_lettered_at_every_consumer(scenario: Scenario, tmp_path: Path) -> None:
    result = run_scenario(scenario)
    (tmp_path / f"{scenario.name}.json").write_text(json.dumps(result.as_dict(), indent=2, default=str))
    unbalanced = [a.as_dict() for a in result.accounts if not a.balanced]
    assert not unbalanced, unbalanced
    assert {a.kind for a in result.accounts} == {"relay", "projection", "archive"}
    # every service some projection reads has events in the workload; one that only consumes
    # (notifications) keeps an empty store, balanced at zero
    read = {source for _, projection in TOPOLOGY.projections for source in projection.sources}
    assert all(a.store > 0 for a in result.accounts if a.source in read)
    assert {a.source for a in result.accounts if a.store > 0} == read
    CHECKS[scenario.name](result)


def tamper(run: Run) -> None:
    """After the drain, what the faults must never cause, made by hand: a counter applied twice, a
    timeline item lost, an archive object lost, an event put on Kinesis a second time."""
    stack, status = run.stack, run.stack.status()
    dynamodb = stack.client("dynamodb")
    dynamodb.update_item(TableName=status["tables"]["user_profiles"],
                         Key={"pk": {"S": f"user#{run.users[0]}"}, "sk": {"S": "profile"}},
                         UpdateExpression="ADD post_count :one", ExpressionAttributeValues={":one": {"N": "1"}})
    live_post = next(p for p, version in run.posts.items() if version == 1)
    timeline = scan(dynamodb, status["tables"]["user_timeline"])
    key = next(k for k in timeline if live_post in k[1] or live_post in k[0])
    dynamodb.delete_item(TableName=status["tables"]["user_timeline"], Key={"pk": {"S": key[0]}, "sk": {"S": key[1]}})
    archived = [k for k in stack.archive_keys() if k.startswith("events/service=profiles/")]
    stack.client("s3").delete_object(Bucket=status["archive_bucket"], Key=archived[0])
    event = next(e for e in stack.event_store("posts"))
    stack.client("kinesis").put_record(StreamName=status["streams"]["posts"], PartitionKey=event["stream_id"],
                                       Data=json.dumps(event, separators=(",", ":")).encode() + b"\n")


def test_the_accounting_sees_what_it_must_never_see() -> None:
    scenario = Scenario("tampered", "nothing injected; the results spoiled by hand after the drain",
                        drive=lambda run: traffic(run, users=2, posts=6, edits=1, deletes=1, renames=1),
                        after_drain=tamper)
    result = run_scenario(scenario)
    assert result.account("user_profiles-from-posts").double_applied == 1
    assert result.account("user_timeline-from-posts").lost >= 1
    assert result.account("archive:profiles").lost >= 1
    assert result.account("posts-publisher").double_applied == 1
    for name in ("user_profiles-from-posts", "user_timeline-from-posts", "archive:profiles", "posts-publisher"):
        assert not result.account(name).balanced
    untouched = [a for a in result.accounts if a.consumer in ("hashtag_counts-from-posts", "archive:posts")]
    assert untouched and all(a.balanced for a in untouched)
