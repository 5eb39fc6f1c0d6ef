"""Fixtures: `eventstack local` started once per session, plain and with faults on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.local_stack import LocalStack, start_local


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    stack = start_local("--firehose-interval", "1")
    yield stack
    code = stack.stop()
    output = stack.process.stdout.read() if stack.process.stdout else ""  # type: ignore[union-attr]
    assert code == 0, output
    assert "export AWS_ENDPOINT_URL=" + stack.aws in output
    export = next(line.strip() for line in output.splitlines() if line.strip().startswith("export AWS_ENDPOINT_URL="))
    assert "AWS_DEFAULT_REGION=us-east-1" in export.split(), export  # AWS CLI v1 reads no other region variable
    assert stack.api in output
    assert "Traceback" not in output, output


@pytest.fixture(scope="session")
def faulty_stack() -> Iterator[LocalStack]:
    stack = start_local("--firehose-interval", "1", "--fault-duplicates", "0.3", "--fault-crash", "0.2",
                        "--fault-kinesis-throttle", "0.2", "--fault-poller-kill", "0.05", "--fault-seed", "4")
    yield stack
    assert stack.stop() == 0
    output = stack.process.stdout.read() if stack.process.stdout else ""  # type: ignore[union-attr]
    assert "Kinesis throttle 0.2" in output and "poller kill 0.05" in output, output
