"""The posts service's entry in the topology (eventstack.topology finds it)."""

from escore.topology import Projection, Route, Service

SERVICE = Service(
    name="posts",
    routes=(
        Route("POST", "/posts"),
        Route("GET", "/posts/{post_id}"),
        Route("PATCH", "/posts/{post_id}"),
        Route("DELETE", "/posts/{post_id}"),
        Route("GET", "/tags/{tag}"),
    ),
    projections=(
        Projection("hashtag_counts", "posts.projectors.hashtag_counts.handler", ("posts",)),
    ),
)
