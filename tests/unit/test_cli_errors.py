"""Bad input to the command line is one clear line and a non-zero exit, never a stack trace."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    return subprocess.run([sys.executable, "-m", "eventstack", *args], capture_output=True, text=True,
                          env=env, timeout=60)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("replay", "nope"), "no projection 'nope'; known: "),
        (("replay", "user_profiles", "--since", "yesterday"), "is not a time"),
        (("replay", "user_profiles", "--into", "sideways"), "--into takes new or in-place"),
        (("archive", "verify", "nope"), "no service 'nope'"),
        (("replay", "user_profiles"), "set AWS_REGION"),  # no region, no credentials, no endpoint
        (("dlq", "list"), "set AWS_REGION"),
        (("local", "--port", "notaport"), "Invalid value for '--port'"),
    ],
)
def test_bad_input_is_one_clear_error(args: tuple[str, ...], says: str) -> None:
    done = run(*args)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    assert says in " ".join((done.stderr + done.stdout).split()), done.stderr


def test_help_lists_every_verb() -> None:
    done = run("--help")
    assert done.returncode == 0
    for verb in ("local", "replay", "archive", "dlq"):
        assert verb in done.stdout
