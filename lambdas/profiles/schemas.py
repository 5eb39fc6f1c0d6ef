"""The profiles service's event schemas and their upcasting steps (none yet).

The place for them: a step is registered on `escore.upcasting.upcasters` at import, e.g.

    @upcasters.register("UserRegistered", 1)
    def user_registered_1_to_2(data: dict[str, Any]) -> dict[str, Any]: ...

Every module that reads profiles events imports this module at its top (`profiles.projectors.
user_profiles`, hence `profiles.readmodels` and `profiles.api`; replay tooling imports
`<service>.schemas` of each source service), so a step added here reaches every reader;
`tests/unit/test_tags.py` checks that from the topology.

Schemas (all at 1): `UserRegistered {user_id, handle, display_name}`, `DisplayNameChanged
{display_name}`.
"""

from __future__ import annotations

from escore.upcasting import upcasters

__all__ = ["upcasters"]
