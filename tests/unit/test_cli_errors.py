"""Bad input to the command line is one clear line and a non-zero exit, never a stack trace."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from eventstack.cli import app
from eventstack.commands import dlq as dlq_command
from eventstack.dlq import RedriveReport
from eventstack.topology import TOPOLOGY

pytestmark = pytest.mark.unit


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    return subprocess.run([sys.executable, "-m", "eventstack", *args], capture_output=True, text=True,
                          env=env, timeout=60)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("replay", "nope"), "error: no projection 'nope'; known: " + ", ".join(p.name for _, p in TOPOLOGY.projections)),
        (("replay", "user_profiles", "--since", "yesterday"), "is not a time"),
        (("replay", "user_profiles", "--into", "sideways"), "--into takes new or in-place"),
        (("archive", "verify", "nope"), "error: no service 'nope'; known: " + ", ".join(s.name for s in TOPOLOGY.services)),
        (("replay", "user_profiles"), "set AWS_REGION"),  # no region, no credentials, no endpoint
        (("dlq", "list"), "set AWS_REGION"),
        (("local", "--port", "notaport"), "Invalid value for '--port'"),
        (("replay", "user_profiles", "--shard", "4/4"), "--shard 4/4: need 0 <= i < n"),
        (("replay", "user_profiles", "--resume", "true"), "unexpected extra argument(s) (true)"),
    ],
)
def test_bad_input_is_one_clear_error(args: tuple[str, ...], says: str) -> None:
    done = run(*args)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    assert says in " ".join((done.stderr + done.stdout).split()), done.stderr


def test_no_message_is_wrapped_in_quotes() -> None:
    """A KeyError's str() is its argument's repr: the message is its argument, printed as it is."""
    for args in (("replay", "nope"), ("archive", "verify", "nope")):
        done = run(*args)
        assert "error: \"" not in done.stderr and "error: '" not in done.stderr, done.stderr


class FakeDeadLetters:
    def __init__(self) -> None:
        self.resources = SimpleNamespace(dlqs={"posts-publisher": "q1", "user_timeline-from-posts": "q2"})

    def redrive(self, mapping: str, *, limit: int, dry_run: bool) -> RedriveReport:
        return RedriveReport(mapping)


@pytest.mark.parametrize(("args", "says"), [
    (["dlq", "redrive", "--dry-run"], "nothing to redrive (dry run): no message in any DLQ"),
    (["dlq", "redrive"], "nothing to redrive: no message in any DLQ"),
    (["dlq", "redrive", "posts-publisher", "--dry-run"],
     "nothing to redrive (dry run): no message in the DLQ of posts-publisher"),
])
def test_redrive_with_empty_queues_says_so(monkeypatch: pytest.MonkeyPatch, args: list[str], says: str) -> None:
    monkeypatch.setattr(dlq_command, "_dead_letters", lambda stage: FakeDeadLetters())
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert done.output.strip() == says


def test_help_lists_every_verb() -> None:
    done = run("--help")
    assert done.returncode == 0
    for verb in ("local", "replay", "archive", "dlq"):
        assert verb in done.stdout
