"""The profiles service's entry in the topology (eventstack.topology finds it)."""

from escore.topology import Projection, Route, Service

SERVICE = Service(
    name="profiles",
    routes=(
        Route("POST", "/users"),
        Route("GET", "/users/{user_id}"),
        Route("PATCH", "/users/{user_id}"),
        Route("GET", "/users/{user_id}/posts"),
    ),
    projections=(
        Projection("user_profiles", "profiles.projectors.user_profiles.handler", ("profiles", "posts")),
        Projection("user_timeline", "profiles.projectors.user_timeline.handler", ("posts",)),
    ),
)
