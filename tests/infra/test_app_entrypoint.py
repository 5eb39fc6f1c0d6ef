"""`python app.py` synthesizes offline with no credentials, exactly what the in-process synth does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.conftest import Synth

pytestmark = pytest.mark.infra

ROOT = Path(__file__).resolve().parents[2]


def test_app_py_synthesizes_without_credentials(dev: Synth, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["CDK_OUTDIR"] = str(tmp_path)
    # What `-c bundle_dependencies=false` does on the CLI; the CLI passes context the same way.
    env["CDK_CONTEXT_JSON"] = json.dumps({"bundle_dependencies": False})
    run = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    for name, template in dev.templates.items():
        assert json.loads((tmp_path / f"{name}.template.json").read_text()) == template, name
