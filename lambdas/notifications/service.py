"""The notifications service's entry in the topology (eventstack.topology finds it).

`user_notifications` is fed by the posts stream (the mentions) and the profiles stream (which
user has which handle); it `notifies`: its effects publish to an SNS topic on AWS, to the log
locally (docs/notifications.md).
"""

from escore.topology import Projection, Service

SERVICE = Service(
    name="notifications",
    projections=(
        Projection("user_notifications", "notifications.projectors.user_notifications", ("posts", "profiles"),
                   notifies=True),
    ),
)
