"""The `eventstack` command line (docs/api.md, "The command line"). Each verb lives in eventstack/commands/."""

from __future__ import annotations

import typer

from eventstack.commands import archive, dlq, local, query, replay
from eventstack.commands import history as history_verb
from eventstack.commands import trace as trace_verb

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
app.command("query")(query.query)
app.add_typer(archive.app, name="archive")
app.add_typer(dlq.app, name="dlq")
app.command("trace")(trace_verb.trace)
app.command("history")(history_verb.history)


def main() -> None:
    """Run a verb; an AWS error (no region, no credentials, unreachable endpoint, access denied)
    is one clear line and exit code 1, never a stack trace."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        app()
    except (BotoCoreError, ClientError) as exc:
        hint = ""
        if "region" in str(exc).lower() or "credentials" in str(exc).lower():
            hint = " (set AWS_REGION and AWS_PROFILE, or AWS_ENDPOINT_URL for the local stack: see `make run`)"
        typer.echo(f"error: {exc}{hint}", err=True)
        raise SystemExit(1) from None
