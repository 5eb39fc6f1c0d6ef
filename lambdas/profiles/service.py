"""The profiles service's entry in the topology (eventstack.topology finds it)."""

from escore.topology import Projection, Service

SERVICE = Service(
    name="profiles",
    projections=(
        Projection("user_profiles", "profiles.projectors.user_profiles", ("profiles", "posts")),
        Projection("user_timeline", "profiles.projectors.user_timeline", ("posts",)),
    ),
)
