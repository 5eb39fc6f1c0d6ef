"""What every service's API function is built from, so a service's `api.py` holds routes only.

`ServiceApp(env, EVENTS)` parses the function's settings (escore.settings.ApiSettings) once, at
cold start, and owns the parts each service used to assemble by hand:

- the event store: DynamoDB, named by the settings, with the API's short timeouts (a stalled
  DynamoDB is a timely 503), reading events upcast by the service's contract; or the store a
  test passes;
- `repository(Aggregate)`: the aggregate's repository on that store, with the snapshot setting;
- `read_model(projection, Model)`: a read model on the projection's *active* table, resolved
  through escore.tables (a replay `--into new` may switch it) and built once per table;
- `api`: the service's JsonApi (escore.http), its idempotency records in the event store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from escore import naming
from escore.aggregate import Aggregate, Repository
from escore.contract import EventContract
from escore.http import JsonApi
from escore.runtime import ConfigError, api_client_config, aws_client
from escore.settings import ApiSettings
from escore.store import EventStore

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")
ReadModelOnTable = Callable[[str, Any], T]  # a read model's constructor: (table name, DynamoDB client)


class ServiceApp:
    def __init__(
        self,
        env: Mapping[str, str],
        contract: EventContract,
        *,
        store: EventStore | None = None,
        snapshot_every: int | None = None,
    ) -> None:
        self.env = env
        self.contract = contract
        self.settings = ApiSettings.from_env({naming.ENV_SERVICE: contract.service, **env})
        self.service = self.settings.service_name
        self.snapshot_every = self.settings.snapshot_every if snapshot_every is None else snapshot_every
        self.store = store if store is not None else self._dynamodb_store()
        self.api = JsonApi(self.service, self.store)

    def _dynamodb_store(self) -> EventStore:
        if self.settings.event_store_table is None:
            raise ConfigError(f"environment variable {naming.ENV_EVENT_STORE_TABLE} is not set")
        from escore.dynamodb_store import DynamoDBEventStore  # boto3 only when no store is given

        client = aws_client("dynamodb", config=api_client_config())
        return DynamoDBEventStore(self.settings.event_store_table, client, self.contract.registry)

    def repository(self, aggregate_type: type[A]) -> Repository[A]:
        return Repository(self.store, aggregate_type, self.service, snapshot_every=self.snapshot_every)

    def read_model(self, projection: str, model: ReadModelOnTable[T], given: T | None = None) -> Callable[[], T]:
        """`given` (tests), or the read model on the projection's active table, made on first use.

        The resolver is made on first use too, not at cold start: commands do not depend on read
        models, so a function without a projection's settings still takes commands (and that
        read fails, logged, as a 500)."""
        if given is not None:
            return lambda: given
        from escore.tables import TableResolver

        resolvers: list[TableResolver] = []
        models: dict[str, T] = {}

        def current() -> T:
            if not resolvers:
                resolvers.append(TableResolver(self.env, projection))  # TableNotConfigured
            table = resolvers[0]()  # the active table: a replay `--into new` may have switched it
            if table not in models:
                models[table] = model(table, aws_client("dynamodb", config=api_client_config()))
            return models[table]

        return current
