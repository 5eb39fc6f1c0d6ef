"""`--help` of every command, as typer renders it (rich panels): a boolean flag takes no value, so its row
shows no type (typer 0.29.x printed `--resume <bool>`, yet `--resume true` is refused: requirements-local.txt
pins typer 0.28.0, whose rich help leaves flags without one)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from eventstack.cli import app
from eventstack.topology import TOPOLOGY

pytestmark = pytest.mark.unit


def command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from command_paths(sub, (*path, name))


ROOT = get_command(app)
PATHS = [path for path, _ in command_paths(ROOT)]


def help_of(path: tuple[str, ...]) -> str:
    done = CliRunner().invoke(app, [*path, "--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    return done.output


def test_every_verb_is_covered() -> None:
    assert {("local",), ("replay",), ("archive", "verify"), ("dlq", "list"), ("dlq", "redrive")} <= set(PATHS)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "eventstack")
def test_flags_show_no_value_in_help(path: tuple[str, ...]) -> None:
    text = help_of(path)
    assert "<bool>" not in text
    command = dict(command_paths(ROOT))[path]
    for param in command.params:
        if getattr(param, "is_flag", False):
            row = next(line for line in text.splitlines() if param.opts[0] in line)
            assert "<" not in row.split(param.opts[0], 1)[1].split("  ")[0], row


def test_a_flag_takes_no_value() -> None:
    """What the help promises: `--dry-run` alone; `--dry-run true` is an extra argument, refused."""
    done = CliRunner().invoke(app, ["dlq", "redrive", "--dry-run", "true", "extra"])
    assert done.exit_code == 2


def test_replay_help_names_every_projection() -> None:
    text = " ".join(help_of(("replay",)).split())
    for _, projection in TOPOLOGY.projections:
        assert projection.name in text


def test_shard_help_says_it_counts_from_zero() -> None:
    text = " ".join(help_of(("replay",)).split())
    assert "0/n" in text and "n-1" in text
