"""Issue 9, defect 12 (the `replay` part): out-of-range values are refused before any AWS call."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("--workers", "0"), "--workers"),
        (("--workers", "-5"), "--workers"),
        (("--memory", "0"), "--memory"),
        (("--handoff", "-1"), "--handoff"),
        (("--batch-size", "0"), "--batch-size"),
    ],
)
def test_an_out_of_range_value_is_one_clear_error(args: tuple[str, ...], option: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(COLUMNS="250", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    done = subprocess.run([sys.executable, "-m", "eventstack", "replay", "user_timeline", *args],
                          capture_output=True, text=True, env=env, timeout=60)
    output = done.stderr + done.stdout
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert f"Invalid value for '{option}'" in " ".join(output.split()), output
