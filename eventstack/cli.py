"""The `eventstack` command line (CONTRACT §6). Each verb lives in eventstack/commands/."""

from __future__ import annotations

import typer

from eventstack.commands import archive, dlq, local, replay

app = typer.Typer(
    name="eventstack",
    help="eventstack: a serverless event-sourcing stack for AWS, and its local runtime.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



@app.callback()
def _verbs() -> None:
    """Keeps `eventstack VERB` a group even while only one verb is registered (typer collapses a lone command)."""


# Verbs are registered below, one line each; their modules import heavy libraries lazily.
app.command("local")(local.local)
app.command("replay")(replay.replay)
app.add_typer(archive.app, name="archive")
app.add_typer(dlq.app, name="dlq")


def main() -> None:
    app()
