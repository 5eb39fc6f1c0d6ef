"""Loading the services' upcasting steps: importing `<service>.schemas` registers them.

Every reader of events imports the schemas of the services it reads (docs/decisions.md, "How the
steps are registered everywhere"); the CLI's readers (the archive reader, replay) do it here, by
service name, as the projector modules do by import.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable


def load_upcasters(services: Iterable[str]) -> None:
    """Import each service's `<service>.schemas`, which registers its upcasting steps."""
    for service in services:
        importlib.import_module(f"{service}.schemas")
