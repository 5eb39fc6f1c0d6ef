"""`eventstack local --api-workers N`: 1 to 64, anything else one clear error and exit 2, before anything
starts, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from eventstack.local.workers import MAX_API_WORKERS, default_api_workers

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("value", "says"), [
    ("0", "0 is not between 1 and 64"),
    ("-1", "-1 is not between 1 and 64"),
    ("65", "65 is not between 1 and 64"),
    ("100000000000000000000", "100000000000000000000 is not between 1 and 64"),
    ("many", "--api-workers"),
])
def test_a_bad_worker_count_is_one_clear_error(value: str, says: str) -> None:
    env = {**os.environ, "COLUMNS": "250"}  # rich draws the error in a box: keep it on one line
    done = subprocess.run([sys.executable, "-m", "eventstack", "local", "--api-workers", value],
                          capture_output=True, text=True, env=env, timeout=60)
    output = done.stderr + done.stdout
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert says in " ".join(output.split()), output


def test_the_default_count_fits_the_machine() -> None:
    assert 2 <= default_api_workers() <= min(8, MAX_API_WORKERS)
    assert default_api_workers() == max(2, min(8, 2 * (os.cpu_count() or 1)))
