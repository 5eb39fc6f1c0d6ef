"""The posts service's entry in the topology (eventstack.topology finds it)."""

from escore.topology import Projection, Service

SERVICE = Service(
    name="posts",
    projections=(
        Projection("hashtag_counts", "posts.projectors.hashtag_counts", ("posts",)),
    ),
)
