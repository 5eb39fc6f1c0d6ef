"""The container image's final stage, run without a Docker engine (none on the machines this runs on):
its environment built as the build stage builds it (a venv of requirements-local.txt alone, wheels
only), the code laid out as its COPY lines lay it out, its ENTRYPOINT and CMD run as its USER (when the
test runs as root) with its ENV, its HEALTHCHECK command polled, and SIGTERM (`docker stop`) answered
by a clean exit. What this does not cover: the image build itself, the base image, the container's
network namespace and port publishing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dockerfile import REPO, stages

pytestmark = pytest.mark.e2e

INSTALL_TIMEOUT = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def shared_python() -> str | None:
    """An interpreter another user can run, with venv and ensurepip: the image's user must be able to
    read its standard library (this venv's base may sit under /root, closed to others)."""
    candidates = [sys._base_executable, "/usr/bin/python3", "/usr/local/bin/python3"]  # type: ignore[attr-defined]
    for candidate in candidates:
        path = Path(candidate).resolve()
        if not path.is_file():
            continue
        ok = all(os.stat(p).st_mode & 0o005 == 0o005 for p in [*path.parents][:-1])
        version = subprocess.run([str(path), "-c", "import sys, venv, ensurepip; print(sys.version_info >= (3, 11))"],
                                 capture_output=True, text=True, timeout=60).stdout.strip()
        if ok and version == "True":
            return str(path)
    return None


@pytest.fixture(scope="module")
def image() -> Iterator[dict[str, object]]:
    build, final = stages()
    root = Path(tempfile.mkdtemp(prefix="eventstack-image-", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        # As root, run as the image's user, given an interpreter that user can run and setpriv to switch;
        # otherwise as whoever runs the tests (then the check of the process's uid is left out).
        shared = shared_python() if os.geteuid() == 0 and shutil.which("setpriv") else None
        as_root = shared is not None
        python = shared or sys.executable
        venv = root / "opt" / "venv"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))}
        env.update({k: v for k, v in build.env().items() if k.startswith("PIP_")})
        subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120, env=env)
        done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(REPO / "requirements-local.txt")],
                              capture_output=True, text=True, timeout=INSTALL_TIMEOUT, env=env, cwd=REPO)
        assert done.returncode == 0, done.stdout + done.stderr
        for copy in final.all("COPY"):
            words = copy.text.split()
            if words[0].startswith("--from="):
                continue
            source, target = words[0], words[-1]
            shutil.copytree(REPO / source, root / target.lstrip("/"),
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "Dockerfile"))
        for path in [root, *root.rglob("*")]:
            os.chmod(path, os.stat(path).st_mode | 0o444 | (0o111 if path.is_dir() else 0))
        home = root / "home"
        home.mkdir()
        uid = int(final.one("USER").text.split(":")[0])
        if as_root:
            os.chown(home, uid, uid)
        yield {"root": root, "venv": venv, "home": home, "uid": uid if as_root else None, "final": final}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def container_env(image: dict[str, object]) -> dict[str, str]:
    """The final stage's ENV, its paths under the test's root; nothing else of this machine's."""
    root = image["root"]
    final = image["final"]
    values = final.env()  # type: ignore[attr-defined]
    env = {"HOME": str(image["home"]), "LANG": "C.UTF-8"}
    for name, value in values.items():
        value = value.replace("$PATH", "/usr/local/bin:/usr/bin:/bin")
        env[name] = ":".join(f"{root}{part}" if part.startswith(("/opt", "/app")) else part for part in value.split(":"))
    return env


def as_user(image: dict[str, object], command: list[str]) -> list[str]:
    if image["uid"] is None:
        return command
    uid = str(image["uid"])
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *command]


def test_the_image_command_serves_the_stack_and_stops_cleanly(image: dict[str, object]) -> None:
    final = image["final"]
    port, aws_port = free_port(), free_port()
    command = final.one("ENTRYPOINT").exec_form() + final.one("CMD").exec_form()  # type: ignore[attr-defined]
    command = [{"8000": str(port), "5000": str(aws_port)}.get(word, word) for word in command]
    env = container_env(image)
    python = Path(image["venv"]) / "bin" / "python"  # type: ignore[arg-type]
    assert shutil.which(command[0], path=env["PATH"]) == str(python)
    process = subprocess.Popen(as_user(image, command), env=env, cwd=str(Path(str(image["root"])) / "app"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        health = final.one("HEALTHCHECK").text  # type: ignore[attr-defined]
        probe = json.loads(health[health.index("CMD [") + 4:])
        probe = [word.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for word in probe]
        deadline = time.monotonic() + 60  # the check's --start-period
        while subprocess.run(as_user(image, probe), env=env, capture_output=True, timeout=30).returncode != 0:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "the health check never passed"
            time.sleep(0.5)

        if image["uid"] is not None:
            uids = {line.split()[1] for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
                    if line.startswith("Uid:")}
            assert uids == {str(image["uid"])}
        api = f"http://127.0.0.1:{port}"
        body = json.dumps({"handle": f"box_{uuid.uuid4().hex[:8]}", "display_name": "Container"}).encode()
        request = urllib.request.Request(api + "/users", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 201
            user_id = json.loads(answer.read())["user_id"]
        drain = urllib.request.Request(api + "/_local/drain?timeout=30", data=b"", method="POST")
        with urllib.request.urlopen(drain, timeout=60) as answer:
            assert answer.status == 200
        with urllib.request.urlopen(f"{api}/users/{user_id}", timeout=30) as answer:
            assert json.loads(answer.read())["display_name"] == "Container"
    finally:
        process.send_signal(signal.SIGTERM)  # what `docker stop` sends first
        try:
            code = process.wait(timeout=20)  # compose.yaml's stop_grace_period
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    output = process.stdout.read() if process.stdout else ""
    assert code == 0, output
    assert f"http://0.0.0.0:{port}" in output  # every address of the container
    assert "Traceback" not in output, output
