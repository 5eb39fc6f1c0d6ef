"""A projector as the core builds it for one folds module (escore.projector_lambda.build)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from escore import naming, projector_lambda
from escore.runtime import Handler
from escore.upcasting import UpcasterRegistry


def build_of(folds: ModuleType) -> Callable[..., Handler]:
    """`build(env, client=..., **options)` of the projector running `folds` (its environment names it)."""

    def build(env: Mapping[str, str], *, client: Any = None, **options: Any) -> Handler:
        return projector_lambda.build({**env, naming.ENV_PROJECTION_MODULE: folds.__name__}, client=client, **options)

    return build


def _every_contract() -> UpcasterRegistry:
    from eventstack.schemas import registry_of_services
    from eventstack.topology import TOPOLOGY

    return registry_of_services(TOPOLOGY.services)


# The upcast steps of every service's contract: what the archive reader reads the whole archive with.
upcasters: UpcasterRegistry = _every_contract()
