"""Every walkthrough of the docs (tests/e2e/walkthroughs.py: each document's ```sh blocks as one
script) runs as written, on one local stack of its own, in more than one order: each after each of the
others and after itself, so none depends on a fresh stack, on handles nobody took, or on what another
left behind. Their sample output (`#   ...` lines) must match what the commands print."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.local_stack import LocalStack, start_local
from tests.e2e.walkthroughs import REPO, blocks, documents, run, samples

pytestmark = pytest.mark.e2e


def order(docs: list[Path]) -> list[Path]:
    """Reversed, then forward: every document runs after every other one and after itself, and the
    last one runs first on the fresh stack."""
    return [*reversed(docs), *docs]


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    stack = start_local("--firehose-interval", "1")
    yield stack
    assert stack.stop() == 0


def test_the_walkthroughs_are_found() -> None:
    docs = documents()
    assert REPO / "README.md" in docs and REPO / "docs" / "replay.md" in docs
    assert samples(REPO / "docs" / "replay.md"), "replay.md shows what its commands print"
    for doc in docs:
        text = "\n".join(blocks(doc))
        assert "set -e" not in text  # the runner sets it: a reader's shell would not exit on an error
        assert "USER=" not in text.replace("USER_ID=", "")  # never overwrites the shell's $USER


def test_every_walkthrough_runs_in_any_order(stack: LocalStack) -> None:
    for doc in order(documents()):
        done = run(doc, stack)
        name = doc.relative_to(REPO)
        assert done.code == 0, f"{name} failed:\n{done.output}"
        assert "Traceback" not in done.output, f"{name}:\n{done.output}"
        assert not done.missing_samples(), f"{name}: sample output not printed: {done.missing_samples()}\n{done.output}"
