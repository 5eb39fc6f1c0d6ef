"""The services' event contracts, as the CLI's readers of several streams need them.

Each service publishes its events in its contract module (escore.contract), named by the topology
(`Service.contract_module`); the archive reader upcasts every stream it reads with all of them,
and replay upcasts with the contracts of the classes its projection folds (`ProjectionSpec.registry`).
"""

from __future__ import annotations

from collections.abc import Iterable

from escore.contract import EventContract, registry_of
from escore.topology import Service
from escore.upcasting import UpcasterRegistry
from eventstack.loader import import_lambda_module


def contract_of(service: Service) -> EventContract:
    contract = getattr(import_lambda_module(service.contract_module), "EVENTS", None)
    if not isinstance(contract, EventContract):
        raise TypeError(f"{service.contract_module} must define EVENTS = EventContract(...)")
    return contract


def registry_of_services(services: Iterable[Service]) -> UpcasterRegistry:
    """One registry with the upcast steps of every contract of `services`."""
    return registry_of(contract_of(service) for service in services)
