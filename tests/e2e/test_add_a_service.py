"""Adding a service is four files and nothing else: proved on a copy of the repository.

The fixture service `likes` (tests/fixtures/likes: its topology entry, its domain with its events,
its routes and its folds) is copied into `lambdas/likes/` of a fresh copy of this checkout, and
nothing else in the copy is edited. Then, as a user would, in that copy and with nothing
reinstalled (subprocesses, so no pytest `pythonpath` hides a missing package):

- the CDK app synthesizes a likes stack: its API route, its event store and stream, the projector
  on the core's handler with the likes and posts streams mapped to it;
- `eventstack local` serves `POST /likes`, and the `like_counts` projection (fed by both streams)
  counts each like once;
- `eventstack replay like_counts` rebuilds it from the archive, the same;
- `eventstack archive verify likes` finds every likes event archived.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.local_stack import LocalStack, start_local

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "likes"
SERVICE_FILES = ("service.py", "domain.py", "api.py", "folds.py")


def _checkout_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    return [name for name in listed if (REPO / name).is_file()]


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("with-likes") / "repo"
    for name in _checkout_files():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    service = root / "lambdas" / "likes"
    service.mkdir()
    for name in SERVICE_FILES:
        shutil.copy2(FIXTURE / name, service / name)
    return root


def _env(copy: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EVENTSTACK_"))}
    # The copy's code first, ahead of this checkout's editable install: nothing is reinstalled.
    env["PYTHONPATH"] = f"{copy}{os.pathsep}{copy / 'lambdas'}"
    env["JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION"] = "20"
    return {**env, **extra}


def _run(copy: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=copy, env=env or _env(copy), capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_the_service_is_four_files_and_nothing_else_is_edited(copy: Path) -> None:
    added = sorted(str(p.relative_to(copy)) for p in (copy / "lambdas" / "likes").rglob("*") if p.is_file())
    assert added == sorted(f"lambdas/likes/{name}" for name in SERVICE_FILES)
    for name in _checkout_files():
        assert (copy / name).read_bytes() == (REPO / name).read_bytes(), name


SYNTH = """
import json, sys
from pathlib import Path
from aws_cdk import App
from infra.application import build, context_defaults
out = Path(sys.argv[1])
app = App(context={**context_defaults(), "stage": "dev", "bundle_dependencies": "false"}, outdir=str(out))
build(app)
app.synth()
print(json.dumps(sorted(p.name for p in out.glob("*.template.json"))))
"""


def test_the_cdk_app_synthesizes_the_new_service(copy: Path, tmp_path: Path) -> None:
    done = _run(copy, "-c", SYNTH, str(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    template = json.loads((tmp_path / "eventstack-dev-likes.template.json").read_text())
    resources = template["Resources"].values()
    functions = {r["Properties"]["FunctionName"]: r["Properties"] for r in resources if r["Type"] == "AWS::Lambda::Function"}
    assert functions["eventstack-dev-likes-api"]["Handler"] == "likes.api.handler"
    projector = functions["eventstack-dev-like_counts-projector"]
    assert projector["Handler"] == "escore.projector_lambda.handler"
    assert projector["Environment"]["Variables"]["PROJECTION_MODULE"] == "likes.folds"
    kinesis = [json.dumps(r["Properties"]["EventSourceArn"]) for r in resources
               if r["Type"] == "AWS::Lambda::EventSourceMapping" and "StartingPosition" in r["Properties"]
               and "EventStoreTable" not in json.dumps(r["Properties"]["EventSourceArn"])]
    assert len(kinesis) == 2, kinesis  # the projector on its own stream and on the posts stream, by name
    assert sum("EventStream" in arn for arn in kinesis) == 1 and sum(":stream/eventstack-dev-posts-events" in arn
                                                                     for arn in kinesis) == 1
    paths = {r["Properties"]["PathPart"] for r in resources if r["Type"] == "AWS::ApiGateway::Resource"}
    assert "likes" in paths
    tables = {r["Properties"].get("TableName") for r in resources if r["Type"] == "AWS::DynamoDB::Table"}
    assert {"eventstack-dev-likes_events", "eventstack-dev-like_counts"} <= tables


@pytest.fixture(scope="module")
def stack(copy: Path) -> Iterator[LocalStack]:
    started = start_local("--log-level", "WARNING", cwd=copy, environ=_env(copy))
    yield started
    started.stop()


def _like_counts(stack: LocalStack, table: str | None = None) -> dict[str, dict[str, Any]]:
    name = table or stack.status()["tables"]["like_counts"]
    items = stack.client("dynamodb").scan(TableName=name, ConsistentRead=True)["Items"]
    return {i["pk"]["S"]: {k: next(iter(v.values())) for k, v in i.items()} for i in items
            if i["pk"]["S"].startswith("post#") and "_deleted" not in i}


def _cli_env(copy: Path, stack: LocalStack) -> dict[str, str]:
    return _env(copy, EVENTSTACK_LOCAL_URL=stack.api, AWS_ENDPOINT_URL=stack.aws, AWS_REGION="us-east-1",
                AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", COLUMNS="200")


def test_the_local_runtime_serves_it_and_replay_and_verify_know_it(copy: Path, stack: LocalStack) -> None:
    author, fans = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(3)]
    post = stack.call("POST", "/posts", {"author_id": author, "text": "likeable #stuff"})
    assert post.status == 201, post
    post_id = post.body["post_id"]
    for fan in fans:
        liked = stack.call("POST", "/likes", {"post_id": post_id, "user_id": fan})
        assert liked.status == 201 and liked.body["version"] == 1, liked
        assert liked.headers.get("x-correlation-id")
    again = stack.call("POST", "/likes", {"post_id": post_id, "user_id": fans[0]})
    assert again.status == 409 and again.error == "conflict", again
    assert stack.call("POST", "/likes", {"post_id": "nope", "user_id": fans[0]}).status == 422
    stack.drain()

    expected = {"post_id": post_id, "author_id": author, "like_count": "3"}
    counted = _like_counts(stack)[f"post#{post_id}"]
    assert {k: counted.get(k) for k in expected} == expected, json.dumps(
        [counted, [m for m in stack.status()["mappings"] if m.get("name", "").startswith("like_counts")]], default=str)
    assert len(stack.event_store("likes")) == 3

    env = _cli_env(copy, stack)
    verified = _run(copy, "-m", "eventstack", "archive", "verify", "likes", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Traceback" not in verified.stderr

    replayed = _run(copy, "-m", "eventstack", "replay", "like_counts", "--into", "new", env=env, timeout=600)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    stack.drain()
    active = stack.client("ssm").get_parameter(Name="/eventstack/local/projections/like_counts/table")
    rebuilt = _like_counts(stack, active["Parameter"]["Value"])[f"post#{post_id}"]
    assert active["Parameter"]["Value"] != "like_counts"  # a new table, switched to
    assert {k: rebuilt[k] for k in expected} == expected
