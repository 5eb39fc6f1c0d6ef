"""The topology's vocabulary: services, their tables and streams, projections, subscriptions.

Pure data, importable everywhere (the CDK app, the local runtime, the CLI, and a service's own
entry). Each service declares itself in one file, `lambdas/<service>/service.py`, holding
`SERVICE = Service(...)`; `eventstack.topology` finds those entries and makes the one `TOPOLOGY`
that the CDK app and the local runtime both build from. Every name derived from a declaration
follows `escore.naming`. Handlers are named as Lambda names them: `module.function`, relative to
`lambdas/`.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

from escore import naming


@dataclass(frozen=True)
class MappingSettings:
    """An event source mapping, as Lambda's EventSourceMapping properties name them."""

    batch_size: int = 100
    batching_window_seconds: int = 1
    max_retries: int = 5  # 0..10, never -1 (infinite)
    max_record_age_seconds: int = 3600
    bisect_on_error: bool = True
    parallelization_factor: int = 1  # 1 keeps a shard's records in order
    starting_position: str = "TRIM_HORIZON"
    report_batch_item_failures: bool = True


# The publisher relays the store's change stream: small batches, strictly in order. No bisect: a
# failed batch (a crash too) is retried from the same first record, which keys its attempt mark
# (lambdas/publisher/handler.py: each event once on Kinesis).
PUBLISHER_MAPPING = MappingSettings(batch_size=100, batching_window_seconds=0, max_retries=10,
                                    max_record_age_seconds=6 * 3600, bisect_on_error=False)
PROJECTOR_MAPPING = MappingSettings()


@dataclass(frozen=True)
class Table:
    logical_name: str
    partition_key: tuple[str, str]  # (name, "S" | "N")
    sort_key: tuple[str, str] | None = None
    ttl_attribute: str | None = None
    stream: bool = False  # DynamoDB stream with new images


@dataclass(frozen=True)
class Projection:
    """A read model: one table, one projector function, fed by the streams of `sources`."""

    name: str  # e.g. "user_profiles"; also the table's logical name
    folds: str  # the module of its folds, holding `PROJECTION = ProjectionSpec(...)`, e.g. "likes.folds"
    sources: tuple[str, ...]  # services whose Kinesis streams feed it
    mapping: MappingSettings = PROJECTOR_MAPPING
    # Its effects publish notifications (an SNS topic on AWS, the log locally): escore.projection's `effects`.
    notifies: bool = False

    @property
    def topic(self) -> str | None:
        """The logical name of the SNS topic its effects publish to, when it `notifies`."""
        return naming.notification_topic(self.name) if self.notifies else None

    @property
    def table(self) -> Table:
        # TTL: the engine's tombstones expire (escore.writes.EXPIRES_ATTRIBUTE)
        return Table(self.name, ("pk", "S"), ("sk", "S"), ttl_attribute="expires_at")

    @property
    def function_name(self) -> str:
        return naming.projector_function(self.name)

    @property
    def handler(self) -> str:
        """Every projector's handler is the core's (escore.projector_lambda), on `folds`."""
        return naming.PROJECTOR_HANDLER


@dataclass(frozen=True)
class Route:
    method: str
    resource: str  # API Gateway resource path, e.g. "/posts/{post_id}"


@dataclass(frozen=True)
class Service:
    name: str
    projections: tuple[Projection, ...] = ()
    contract: str | None = None  # its events' module; default `<name>.contract` (escore.naming)
    publisher_handler: str = "publisher.handler.handler"
    publisher_mapping: MappingSettings = PUBLISHER_MAPPING

    @property
    def api_handler(self) -> str:
        return naming.api_handler(self.name)

    @property
    def contract_module(self) -> str:
        """The module of its published events, `EVENTS = EventContract(...)`; consumers depend on it alone."""
        return self.contract or naming.contract_module(self.name)

    @property
    def routes(self) -> tuple[Route, ...]:
        """The routes the service's API module registers: declared there, once (see `api_routes`)."""
        return api_routes(self.api_handler)

    @property
    def event_store(self) -> Table:
        return Table(
            naming.event_store_table(self.name),
            ("stream_id", "S"),
            ("version", "N"),
            ttl_attribute="expires_at",
            stream=True,
        )

    @property
    def stream_logical_name(self) -> str:
        return naming.stream(self.name)

    @property
    def api_function_name(self) -> str:
        return naming.api_function(self.name)

    @property
    def publisher_function_name(self) -> str:
        return naming.publisher_function(self.name)


@dataclass(frozen=True)
class Subscription:
    """`projection` (owned by `owner`) consumes the stream of `source`."""

    owner: str
    projection: Projection
    source: str

    @property
    def name(self) -> str:
        return naming.subscription(self.projection.name, self.source)


@dataclass(frozen=True)
class Topology:
    services: tuple[Service, ...]
    archive_prefix: str = "events/"
    archive_error_prefix: str = "errors/"

    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(f"no service {name!r}; known: {', '.join(s.name for s in self.services)}")

    @property
    def projections(self) -> tuple[tuple[Service, Projection], ...]:
        return tuple((s, p) for s in self.services for p in s.projections)

    def projection(self, name: str) -> tuple[Service, Projection]:
        for service, projection in self.projections:
            if projection.name == name:
                return service, projection
        known = ", ".join(p.name for _, p in self.projections)
        raise KeyError(f"no projection {name!r}; known: {known}")

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(
            Subscription(service.name, projection, source)
            for service, projection in self.projections
            for source in projection.sources
        )


@functools.cache
def api_routes(api_handler: str) -> tuple[Route, ...]:
    """The routes an API module's `build` registers, learnt by building it on an in-memory store.

    A route is declared once, by its decorator in `lambdas/<service>/api.py`, beside its handler
    function, models and docs; API Gateway's resources (infra/api.py), the local runtime's router
    and the OpenAPI document all come from here. Building touches no AWS: read models are made on
    first use (escore.app.ServiceApp), so `build({}, store=...)` only registers the routes.
    """
    from escore.memory_store import InMemoryEventStore

    module = importlib.import_module(api_handler.rpartition(".")[0])
    api = module.build({}, store=InMemoryEventStore())
    return tuple(Route(spec.method, spec.template) for spec in api.routes)
