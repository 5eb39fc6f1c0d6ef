"""checkov on every synthesized template, beside cdk-nag: no failed check but those in the skips file.

The skips file (infra/checkov_skips.yaml) is kept honest both ways: a failed check it does not cover
fails, and so does an entry (or one of its resource patterns) that no configuration fires any more.

checkov pins boto3 to a release older than ours, so it lives in its own venv (.venv/checkov, made by
`make setup` from requirements-checkov.txt) and runs as a program, both configurations at once.
Offline: --skip-download (no Prisma Cloud look-up).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.conftest import Synth

pytestmark = pytest.mark.infra

ROOT = Path(__file__).resolve().parents[2]
SKIPS_FILE = ROOT / "infra" / "checkov_skips.yaml"
CHECKOV = Path(os.environ.get("CHECKOV", ROOT / ".venv" / "checkov" / "bin" / "checkov"))


@dataclass(frozen=True)
class Finding:
    check: str
    stack: str  # without "eventstack-<stage>-": posts, profiles, shared
    logical_id: str
    name: str

    @property
    def target(self) -> str:
        return f"{self.stack}/{self.logical_id}"

    def __str__(self) -> str:
        return f"{self.check} {self.target}: {self.name}"


@dataclass
class Scan:
    findings: list[Finding]
    summary: dict[str, Any]
    seconds: float

    def __repr__(self) -> str:  # shown in every failure: keep it short
        return f"Scan({len(self.findings)} findings, {self.seconds:.1f}s)"


def load_skips() -> dict[str, dict[str, Any]]:
    skips: dict[str, dict[str, Any]] = yaml.safe_load(SKIPS_FILE.read_text())
    return skips


def covered(finding: Finding, skips: dict[str, dict[str, Any]]) -> bool:
    entry = skips.get(finding.check)
    return entry is not None and any(fnmatchcase(finding.target, p) for p in entry["resources"])


def _command(synth: Synth) -> list[str]:
    templates = sorted(path.name for path in synth.outdir.glob("*.template.json"))
    files = [arg for name in templates for arg in ("-f", name)]
    return [str(CHECKOV), *files, "--framework", "cloudformation", "-o", "json", "--quiet", "--skip-download"]


def _parse(synth: Synth, stdout: str, seconds: float) -> Scan:
    reports = json.loads(stdout)
    reports = reports if isinstance(reports, list) else [reports]
    prefix = f"eventstack-{synth.stage}-"
    findings = []
    summary: dict[str, Any] = {"resource_count": 0, "parsing_errors": 0}
    for report in reports:
        for key in summary:
            summary[key] += report.get("summary", {}).get(key, 0)
        for failed in report.get("results", {}).get("failed_checks", []):
            stack = Path(failed["file_path"]).name.removesuffix(".template.json").removeprefix(prefix)
            logical_id = failed["resource"].rpartition(".")[2]  # "AWS::Lambda::Function.ApiFunction685AAB5B"
            findings.append(Finding(failed["check_id"], stack, logical_id, failed["check_name"]))
    return Scan(sorted(findings, key=str), summary, seconds)


@pytest.fixture(scope="session")
def scans(synths: dict[str, Synth]) -> dict[str, Scan]:
    if not CHECKOV.exists():
        pytest.fail(f"checkov not found at {CHECKOV}: run `make setup` (it makes .venv/checkov)")
    started = time.perf_counter()
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "WARNING"}
    running = {
        name: subprocess.Popen(
            _command(synth),
            cwd=synth.outdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, synth in synths.items()
    }
    results = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=300)
        # checkov exits 1 when a check fails; anything else is a crash.
        assert process.returncode in (0, 1), (
            f"checkov on {name} exited {process.returncode}:\n{stderr[-4000:]}"
        )
        results[name] = _parse(synths[name], stdout, time.perf_counter() - started)
    return results


def test_checkov_scanned_every_resource(each: Synth, scans: dict[str, Scan]) -> None:
    scan = scans[each.name]
    expected = sum(len(template.get("Resources", {})) for template in each.templates.values())
    assert len(each.templates) >= 3
    assert scan.summary == {"resource_count": expected, "parsing_errors": 0}, scan.summary


def test_no_failed_check_outside_the_skips_file(each: Synth, scans: dict[str, Scan]) -> None:
    skips = load_skips()
    unskipped = [str(finding) for finding in scans[each.name].findings if not covered(finding, skips)]
    assert unskipped == [], (
        f"checkov findings ({each.name}) neither fixed nor justified in {SKIPS_FILE.name}:\n"
        + "\n".join(unskipped)
    )


def test_every_skip_still_fires(scans: dict[str, Scan]) -> None:
    """In some configuration: an entry for prod-only resources is kept while prod still fires it."""
    findings = [finding for scan in scans.values() for finding in scan.findings]
    stale = [
        f"{check} {pattern}"
        for check, entry in load_skips().items()
        for pattern in entry["resources"]
        if not any(f.check == check and fnmatchcase(f.target, pattern) for f in findings)
    ]
    assert stale == [], f"entries of {SKIPS_FILE.name} that no longer fire: remove them\n" + "\n".join(stale)


def test_every_skip_has_a_reason_and_resources() -> None:
    skips = load_skips()
    assert skips
    for check, entry in skips.items():
        assert re.fullmatch(r"CKV2?_AWS_\d+", check), check
        assert set(entry) == {"reason", "resources"}, (check, sorted(entry))
        reason = entry["reason"]
        assert isinstance(reason, str) and "\n" not in reason and len(reason) > 40, check
        patterns = entry["resources"]
        assert isinstance(patterns, list) and patterns, check
        assert all(isinstance(p, str) and re.fullmatch(r"[\w*?]+/[\w*?]+", p) for p in patterns), check
