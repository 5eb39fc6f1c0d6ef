"""The replay-worker Lambda (lambdas/replay_worker/handler.py) on moto, with a real plan: the archive
planned by DuckDB (eventstack.replay_plan.plan_files, the local engine's plan step), the files in S3,
one invocation per manifest item, as the Step Functions Distributed Map makes them."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pydantic import ValidationError
from replay_support import History, archive_with_duplicates, fold, gz_lines, read_model, scan
from support.aws import create_projection_table
from support.lambda_context import LambdaContext

from escore.replay_file import done_key, rebuild_namespace
from eventstack.local.emulation import tuned_moto_dynamodb
from eventstack.replay import load_spec
from eventstack.replay_plan import Plan, plan_files
from eventstack.topology import TOPOLOGY

pytestmark = pytest.mark.integration

BUCKET = "eventstack-plans-test"
CUTS = {"posts-events": {"shardId-000000000000": "49650", "shardId-000000000001": "49700"}}


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws(), tuned_moto_dynamodb():
        s3, dynamodb = boto3.client("s3"), boto3.client("dynamodb")
        s3.create_bucket(Bucket=BUCKET)
        yield {"s3": s3, "dynamodb": dynamodb}


def make_plan(tmp_path: Path, aws: dict[str, Any], name: str, files: int) -> tuple[list[dict[str, Any]], list[Any]]:
    """A history archived with duplicates, planned into `files` files, uploaded; the manifest's items."""
    events = History(seed=41).run(400)
    archive = tmp_path / "archive"
    archive.mkdir()
    written: list[str] = []

    class Local:  # archive_with_duplicates writes through an S3 client's put_object; here, to files
        def put_object(self, Bucket: str, Key: str, Body: bytes) -> None:
            (archive / Key.replace("/", "_")).write_bytes(Body)
            written.append(Key)

    archive_with_duplicates(Local(), events, random.Random(41), duplicate_rate=0.2)
    paths = sorted(archive / key.replace("/", "_") for key in written)
    (archive / "zz-extra.gz").write_bytes(gz_lines(events[:30]))  # delivered again, later
    paths.append(archive / "zz-extra.gz")
    plan = Plan([], "replay-plans/test/run/")
    out = tmp_path / "plan"
    plan_files(plan, paths, None, files, out)
    assert not plan.problems and plan.unique == len(events) and plan.lines > plan.unique
    _, projection = TOPOLOGY.projection(name)
    items = []
    for k in range(files):
        keys = []
        for path in sorted(out.glob(f"bucket={k}/*")):
            key = f"{plan.prefix}bucket={k}/{path.name}"
            aws["s3"].put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
            keys.append(key)
        items.append({"projection": name, "folds": projection.folds, "stage": "test", "table": name,
                      "bucket": BUCKET, "keys": keys, "index": k, "count": files, "cuts": CUTS,
                      "require_start": True, "origins": None})
    return items, events


@pytest.mark.parametrize("name", ["user_profiles", "hashtag_counts"])
def test_each_item_folds_its_file_and_a_rerun_skips_it(tmp_path: Path, aws: dict[str, Any], name: str) -> None:
    from replay_worker.handler import build

    create_projection_table(aws["dynamodb"], name)
    items, events = make_plan(tmp_path, aws, name, files=3)
    handler = build({}, s3=aws["s3"], dynamodb=aws["dynamodb"])
    results = [handler(item, None) for item in items]
    assert [r["status"] for r in results] == ["done"] * 3, [r["problems"] for r in results]
    spec = load_spec(name)
    assert read_model(aws["dynamodb"], name) == fold(spec, events)
    assert sum(r["folded"] + r["skipped"] for r in results) == len(events) == sum(r["events"] for r in results)
    assert sum(r["written"] for r in results) > 0 and all(r["already"] == 0 for r in results)
    raw = scan(aws["dynamodb"], name)
    for k in range(3):
        assert done_key(k, 3) in raw
    shared = [item for key, item in raw.items() if not key[0].startswith("$") and
              any(a.startswith("_w#replay:") for a in item)]
    assert shared  # every shared item: its bucket's watermark and the live marks of every cut
    for item in shared:
        assert any(f"_w#{rebuild_namespace(k, 3)}" in item for k in range(3))  # one per bucket that added to it
        assert item["_w#posts-events:0"]["S"].endswith("49650") and item["_w#posts-events:1"]["S"].endswith("49700")
    again = [handler(item, None) for item in items]
    assert [r["status"] for r in again] == ["already-done"] * 3 and all(r["written"] == 0 for r in again)


def test_the_lambda_entry_point(tmp_path: Path, aws: dict[str, Any]) -> None:
    """`replay_worker.handler.handler` as Lambda calls it: clients from the environment, one item."""
    from replay_worker.handler import handler

    create_projection_table(aws["dynamodb"], "user_timeline")
    items, events = make_plan(tmp_path, aws, "user_timeline", files=1)
    result = handler(items[0], LambdaContext())
    assert result["status"] == "done" and result["index"] == 0 and result["count"] == 1
    assert read_model(aws["dynamodb"], "user_timeline") == fold(load_spec("user_timeline"), events)
    with pytest.raises(ValidationError):  # a bad item is an error (the Map's retry, then the execution fails)
        handler({**items[0], "index": 1}, LambdaContext())
    with pytest.raises(ValidationError):
        handler({**items[0], "unknown": True}, LambdaContext())


def test_a_gap_is_a_problem_answer_not_an_error(tmp_path: Path, aws: dict[str, Any]) -> None:
    import gzip

    from replay_worker.handler import build

    create_projection_table(aws["dynamodb"], "user_timeline")
    items, _ = make_plan(tmp_path, aws, "user_timeline", files=1)
    key = items[0]["keys"][0]
    lines = gzip.decompress(aws["s3"].get_object(Bucket=BUCKET, Key=key)["Body"].read()).splitlines()
    lost = next(i for i, line in enumerate(lines) if b'"version":2' in line and b"PostEdited" in line)
    aws["s3"].put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(b"\n".join(lines[:lost] + lines[lost + 1:])))
    result = build({}, s3=aws["s3"], dynamodb=aws["dynamodb"])(items[0], None)
    assert result["status"] == "problems" and any("missing" in p for p in result["problems"])
    assert done_key(0, 1) not in scan(aws["dynamodb"], "user_timeline")  # not done: the replay does not switch
