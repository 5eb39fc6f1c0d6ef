"""The one declaration of eventstack's topology, gathered from each service's own entry.

A service declares itself in `lambdas/<service>/service.py` (`SERVICE = Service(...)`, the
vocabulary of `escore.topology`): its routes, its projections and the streams that feed them.
`TOPOLOGY` is every such entry, in name order. The CDK app (`infra/`), the local runtime
(`eventstack.local`), replay and the DLQ tools all build from it and nothing else, and tests check
that the synthesized templates and the local plan agree with it. Adding a service adds an entry;
nothing here is edited.
"""

from __future__ import annotations

from escore.topology import (
    PROJECTOR_MAPPING,
    PUBLISHER_MAPPING,
    MappingSettings,
    Projection,
    Route,
    Service,
    Subscription,
    Table,
    Topology,
)
from eventstack.loader import LAMBDAS_DIR, import_lambda_module

__all__ = [
    "PROJECTOR_MAPPING", "PUBLISHER_MAPPING", "TOPOLOGY", "MappingSettings", "Projection", "Route", "Service",
    "Subscription", "Table", "Topology", "discover",
]

ENTRY = "service"  # lambdas/<service>/service.py


def discover() -> Topology:
    """Every service entry under lambdas/, in name order; a package without an entry is a library."""
    services: list[Service] = []
    for folder in sorted(LAMBDAS_DIR.iterdir()):
        if not (folder / f"{ENTRY}.py").is_file():
            continue
        service = getattr(import_lambda_module(f"{folder.name}.{ENTRY}"), "SERVICE", None)
        if not isinstance(service, Service):
            raise TypeError(f"lambdas/{folder.name}/{ENTRY}.py must define SERVICE = Service(...)")
        if service.name != folder.name:
            raise ValueError(f"lambdas/{folder.name}/{ENTRY}.py declares service {service.name!r}: name it {folder.name!r}")
        services.append(service)
    return Topology(services=tuple(services))


TOPOLOGY = discover()
