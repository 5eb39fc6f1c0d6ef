"""Event stores for the API tests: in memory (unit tier) or DynamoDB on moto (integration tier).

Starting moto costs a few hundred milliseconds, so a test module starts it once (`mocked_aws`,
in a module-scoped fixture) and each test gets a table of its own (`event_store`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from escore.store import EventStore
from eventstack.topology import TOPOLOGY
from tests.support.aws import create_table

# Parametrize a fixture with these to run a test on both adapters, each in its own tier.
STORE_KINDS = [
    pytest.param("memory", marks=pytest.mark.unit, id="memory"),
    pytest.param("dynamodb", marks=pytest.mark.integration, id="dynamodb"),
]

_tables = itertools.count(1)


@contextmanager
def mocked_aws() -> Iterator[Any]:
    """moto's in-process AWS; yields a DynamoDB client."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        yield boto3.client("dynamodb", region_name="us-east-1")


def event_store(kind: str, service: str, request: pytest.FixtureRequest,
                client_fixture: str = "aws") -> tuple[EventStore, dict[str, str]]:
    """(store, env of the service's API function) for `kind` "memory" or "dynamodb".

    For "dynamodb", `client_fixture` names the (module-scoped) fixture yielding a moto client;
    each call creates a fresh table, so tests never see each other's events.
    """
    env = {"SERVICE_NAME": service}
    if kind == "memory":
        from escore.memory_store import InMemoryEventStore

        return InMemoryEventStore(), env
    from escore.dynamodb_store import DynamoDBEventStore

    client = request.getfixturevalue(client_fixture)
    table = create_table(client, TOPOLOGY.service(service).event_store, f"{service}_events_{next(_tables)}")
    return DynamoDBEventStore(table, client), {**env, "EVENT_STORE_TABLE": table}
