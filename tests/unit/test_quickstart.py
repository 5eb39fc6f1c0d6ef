"""The README's two quick-start commands: `make run` and `make test` go through `make setup` into .venv,
on a fresh clone and on a machine where everything is installed; what make prints and runs around them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
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
    assert re.search(r"^\$\(STAMP\): requirements\.txt requirements-local\.txt lambdas/requirements\.txt "
                     r"pyproject\.toml", makefile, re.M)
    assert re.search(r"^setup: \$\(STAMP\)", makefile, re.M)
    assert re.search(r"^run: setup", makefile, re.M) and re.search(r"^test: setup", makefile, re.M)


def test_the_local_runtime_dependencies_are_installed_by_setup() -> None:
    requirements = (REPO / "requirements.txt").read_text()
    assert re.search(r"^-r requirements-local\.txt$", requirements, re.M)
    local = (REPO / "requirements-local.txt").read_text()
    moto = next(line for line in local.splitlines() if line.startswith("moto["))
    for extra in ("dynamodb", "dynamodbstreams", "kinesis", "s3", "sqs", "firehose"):
        assert extra in moto
    # moto's HTTP server needs Flask and Flask-CORS: pinned beside it (moto's `server` extra brings far more)
    assert re.search(r"^flask==", local, re.M) and re.search(r"^flask-cors==", local, re.M)
    version = moto.split("==")[1]
    assert re.search(rf"^moto\[server,[a-z0-9,]+\]=={re.escape(version)}$", requirements, re.M)
    assert re.search(r"^eventstack = \"eventstack\.cli:main\"", (REPO / "pyproject.toml").read_text(), re.M)


def test_make_test_runs_the_e2e_tier() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    addopts = re.search(r"^addopts = (.*)$", pyproject, re.M)
    assert addopts is not None and "not e2e" not in addopts.group(1)
    assert '"e2e: ' in pyproject


def test_a_first_run_says_what_it_installs_and_how_long_it_takes_before_it_starts() -> None:
    """A fresh clone's `make run` is not silent for its first two minutes: the first thing it prints is what
    it installs and roughly how long that takes, and pip then prints each package as it fetches it."""
    lines = dry_run("run")
    first = lines[0]
    assert first.startswith("echo ") and "installing" in first and "minute" in first, first
    assert index_of(lines, r"python3? -m venv \.venv$") > 0
    for line in lines:
        if " -m pip install " in line:
            assert not re.search(r"\s(--quiet|-q+)(\s|$)", line), line
    checkov = index_of(lines, r"checkov/bin/python -m pip install")
    assert "installing checkov" in lines[checkov - 2] or "installing checkov" in lines[checkov - 1]


def test_make_run_passes_args_to_the_local_runtime() -> None:
    lines = dry_run("run", "ARGS=--port 8100 --aws-port 5100")
    assert lines[-1] == ".venv/bin/eventstack local --port 8100 --aws-port 5100"
    assert dry_run("run")[-1] == ".venv/bin/eventstack local"


def test_setup_installs_the_aws_cli_into_the_venv() -> None:
    """The README's examples call `aws`: `make setup` installs AWS CLI v1 (awscli) into .venv/bin."""
    requirements = (REPO / "requirements.txt").read_text()
    assert re.search(r"^awscli==\d+\.\d+\.\d+$", requirements, re.M)
    aws = Path(sys.executable).parent / "aws"
    assert aws.is_file(), f"{aws} is missing: run make setup"
    done = subprocess.run([str(aws), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "aws-cli/1." in done.stdout + done.stderr, done.stderr


def test_one_pinned_cdk_cli_everywhere() -> None:
    """Every mention of the CDK CLI (Makefile, README, docs) runs the Makefile's version, with npx --yes (no
    prompt, so it works without a terminal too)."""
    makefile = (REPO / "Makefile").read_text()
    version = re.search(r"^CDK_VERSION := (\d+\.\d+\.\d+)$", makefile, re.M)
    assert version is not None
    assert re.search(r"^CDK := npx --yes aws-cdk@\$\(CDK_VERSION\)$", makefile, re.M)
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for line in path.read_text().splitlines():
            for mention in re.findall(r"\S*\s*\S*aws-cdk\S*", line):
                if "aws-cdk-lib" in mention or "aws-cdk/" in mention:
                    continue  # the CDK library, not the CLI
                assert f"npx --yes aws-cdk@{version.group(1)}" in line, f"{path.name}: {line}"
    assert "npx aws-cdk" not in (REPO / "README.md").read_text()


def test_the_readme_runs_pytest_from_the_venv() -> None:
    """A bare `pytest -m e2e` picks up whatever pytest is first on PATH (a system one, say)."""
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text()
        for match in re.finditer(r"\bpytest\s+(-|tests/)", text):
            assert text[:match.start()].endswith("python -m "), f"{path.name}: {text[match.start() - 40:match.end()]}"
    assert ".venv/bin/python -m pytest -m e2e" in (REPO / "README.md").read_text()


def test_make_bench_writes_to_an_ignored_folder() -> None:
    lines = dry_run("bench")
    assert lines[-1] == ".venv/bin/python -m bench --out bench/out"
    ignored = subprocess.run(["git", "check-ignore", "-q", "bench/out/cost.json"], cwd=REPO, timeout=30)
    assert ignored.returncode == 0, "bench/out/ is not ignored by git"
    assert dry_run("bench", "BENCH_OUT=bench/results")[-1].endswith("--out bench/results")
