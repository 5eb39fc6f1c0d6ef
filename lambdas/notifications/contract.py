"""The notifications service's event contract: it publishes no events.

A side-effect consumer: it folds the posts and profiles streams into its read model and sends
notifications, and nothing it does is a fact other services build on. Its event store holds only
its API's idempotency records; its stream stays empty.
"""

from escore.contract import EventContract

EVENTS = EventContract("notifications", ())
