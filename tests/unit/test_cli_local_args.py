"""Issue 9, defect 12 (the `local` part): bad --port, --aws-port and --host values are one clear
error and exit 2, before anything starts, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--port", "70000"), "Invalid value for '--port'"),
        (("--port", "-1"), "Invalid value for '--port'"),
        (("--aws-port", "65536"), "Invalid value for '--aws-port'"),
        (("--port", "5000"), "cannot share port 5000"),
        (("--host", "256.1.1.1"), "'256.1.1.1' is not an IP address"),
        (("--host", "no-such-host.invalid"), "'no-such-host.invalid' does not resolve"),
        (("--host", "192.0.2.1"), "cannot listen on '192.0.2.1'"),  # TEST-NET-1: no address of this machine
        (("--fault-poller-kill", "1"), "Invalid value for '--fault-poller-kill'"),
        (("--fault-kinesis-throttle", "1.5"), "Invalid value for '--fault-kinesis-throttle'"),
        (("--fault-archive-put-failure", "-0.1"), "Invalid value for '--fault-archive-put-failure'"),
        (("--fault-archive-retry-seconds", "7201"), "Invalid value for '--fault-archive-retry-seconds'"),
    ],
)
def test_a_bad_address_or_port_is_one_clear_error(args: tuple[str, ...], says: str) -> None:
    env = {**os.environ, "COLUMNS": "250"}  # rich draws the error in a box: keep it on one line
    done = subprocess.run([sys.executable, "-m", "eventstack", "local", *args], capture_output=True, text=True,
                          env=env, timeout=60)
    output = done.stderr + done.stdout
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert says in " ".join(output.split()), output
