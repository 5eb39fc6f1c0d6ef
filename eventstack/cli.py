"""The `eventstack` command line (CONTRACT §6). Each verb lives in eventstack/commands/."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="eventstack",
    help="eventstack: a serverless event-sourcing stack for AWS, and its local runtime.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Verbs are registered below, one line each; their modules import heavy libraries lazily.


def main() -> None:
    app()
