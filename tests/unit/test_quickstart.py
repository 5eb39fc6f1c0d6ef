"""The README's two quick-start commands (CONTRACT §1): `make run` and `make test` go through
`make setup` into .venv, on a fresh clone and on a machine where everything is installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.unit, pytest.mark.skipif(shutil.which("make") is None, reason="needs make")]

REPO = Path(__file__).resolve().parents[2]


def dry_run(*args: str) -> list[str]:
    """What make would run, as if nothing were installed yet (-B: every target out of date)."""
    # A clean environment: under `make test` the inherited MAKEFLAGS/MAKELEVEL would make the inner
    # make print "Entering/Leaving directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    done = subprocess.run(["make", "--no-print-directory", "-n", "-B", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def index_of(lines: list[str], pattern: str) -> int:
    for i, line in enumerate(lines):
        if re.search(pattern, line):
            return i
    raise AssertionError(f"no line matches {pattern!r} in:\n" + "\n".join(lines))


SETUP_STEPS = (
    r"python3? -m venv \.venv$",
    r"^\.venv/bin/python -m pip install .*-r requirements\.txt .*-e \.",
)


@pytest.mark.parametrize(("target", "last"), [("run", r"^\.venv/bin/eventstack local$"),
                                              ("test", r"^\.venv/bin/python -m pytest")])
def test_the_quick_start_command_installs_into_the_venv_first(target: str, last: str) -> None:
    lines = dry_run(target)
    steps = [index_of(lines, pattern) for pattern in SETUP_STEPS]
    assert steps == sorted(steps)
    assert index_of(lines, last) > steps[-1]
    assert lines[-1] == lines[index_of(lines, last)]  # the command itself comes last


def test_setup_runs_alone_and_is_a_no_op_when_installed() -> None:
    lines = dry_run("setup")
    for pattern in SETUP_STEPS:
        index_of(lines, pattern)
    makefile = (REPO / "Makefile").read_text()
    # one stamp, remade only when a requirements file or pyproject.toml changes
    assert re.search(r"^\$\(STAMP\): requirements\.txt lambdas/requirements\.txt pyproject\.toml", makefile, re.M)
    assert re.search(r"^setup: \$\(STAMP\)", makefile, re.M)
    assert re.search(r"^run: setup", makefile, re.M) and re.search(r"^test: setup", makefile, re.M)


def test_the_local_runtime_dependencies_are_installed_by_setup() -> None:
    requirements = (REPO / "requirements.txt").read_text()
    moto = next(line for line in requirements.splitlines() if line.startswith("moto["))
    # ThreadedMotoServer needs Flask, which only moto's `server` extra brings (TOOLCHAIN.md)
    for extra in ("server", "dynamodb", "dynamodbstreams", "kinesis", "s3", "sqs", "firehose"):
        assert extra in moto
    assert re.search(r"^eventstack = \"eventstack\.cli:main\"", (REPO / "pyproject.toml").read_text(), re.M)


def test_make_test_runs_the_e2e_tier() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    addopts = re.search(r"^addopts = (.*)$", pyproject, re.M)
    assert addopts is not None and "not e2e" not in addopts.group(1)
    assert '"e2e: ' in pyproject
