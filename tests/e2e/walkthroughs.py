"""Run the docs' walkthroughs as a reader would: every ```sh block of a document, in order, as one bash
script from the repository's root, against a local stack (its ports in place of 8000 and 5000), in an
environment with nothing of this machine's AWS settings, and only the system's PATH (a walkthrough puts
.venv/bin on it itself). ```bash blocks are not run (AWS, a second terminal's `make run`, ...).

A walkthrough may show what a command prints as comment lines of three spaces under it
(`#   events read: 12, ...`): each must match a line of the output, a run of digits standing for any
number and `…` for anything (the counts depend on what ran before)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.local_stack import LocalStack

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
# what a local walkthrough never runs: make (setup, deploys), the CDK CLI, a stage or profile of AWS
UNSAFE = r"(^|[\s;&|(])(make|npx|cdk)\s|--stage\b|AWS_PROFILE"


def documents() -> list[Path]:
    """Every document with a runnable walkthrough: the README, then docs/ in name order."""
    return [d for d in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))] if blocks(d)]


def blocks(doc: Path) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", doc.read_text(), re.S | re.M)


def samples(doc: Path) -> list[str]:
    """The sample output lines of a document's walkthrough (`#   ...` at the start of a line)."""
    return [m.group(1) for block in blocks(doc) for m in re.finditer(r"^#   (\S.*)$", block, re.M)]


def sample_pattern(sample: str) -> re.Pattern[str]:
    parts = re.split(r"(\d+|…)", sample.strip())
    body = "".join(r"\d+" if p.isdigit() else ".*" if p == "…" else re.escape(p) for p in parts)
    return re.compile(body)


@dataclass
class Run:
    doc: Path
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def missing_samples(self) -> list[str]:
        lines = self.output.splitlines()
        return [s for s in samples(self.doc) if not any(sample_pattern(s).search(line) for line in lines)]


def environment(home: str) -> dict[str, str]:
    env = {"PATH": SYSTEM_PATH, "HOME": home, "LANG": "C.UTF-8", "TMPDIR": home}
    # whatever this machine has in ~/.aws stays out of it
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    return env


def run(doc: Path, stack: LocalStack, timeout: float = 300) -> Run:
    venv = Path(sys.executable).parent
    assert (venv / "aws").is_file() and (venv / "eventstack").is_file(), \
        f"{venv} has no aws or eventstack: run make setup (the walkthroughs use both)"
    api_port = stack.api.rsplit(":", 1)[1]
    aws_port = stack.aws.rsplit(":", 1)[1]
    code = [re.sub(r"(^|\s)#.*$", "", line) for line in "\n".join(blocks(doc)).splitlines()]  # comments aside
    unsafe = [line for line in code if re.search(UNSAFE, line)]
    assert not unsafe, f"{doc.name}: a ```sh block is run against the local stack only; mark these ```bash: {unsafe}"
    script = "set -euo pipefail\n" + "\n".join(blocks(doc))
    script = script.replace("127.0.0.1:8000", f"127.0.0.1:{api_port}").replace("127.0.0.1:5000", f"127.0.0.1:{aws_port}")
    with tempfile.TemporaryDirectory(prefix="eventstack-walkthrough-") as home:
        env = environment(home)
        if venv.parent.parent != REPO:  # a venv elsewhere than the checkout's .venv: stand it in
            env["PATH"] = f"{venv}:{SYSTEM_PATH}"
        done = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
    return Run(doc, done.returncode, done.stdout, done.stderr)
