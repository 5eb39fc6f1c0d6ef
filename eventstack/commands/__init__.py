"""The verbs of the `eventstack` command line, one module each (eventstack/cli.py registers them)."""

from __future__ import annotations


def reason(exc: BaseException) -> str:
    """An exception's message for a one-line `error: ...`. A KeyError's str() is the repr of its argument
    (`"no service 'nope'; ..."`, quotes included): its argument itself is the message."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)
