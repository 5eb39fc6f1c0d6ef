"""Fixtures for the EventStore contract suite: one `store` per adapter.

- `memory`: InMemoryEventStore (marked unit);
- `dynamodb`: DynamoDBEventStore on moto's in-process `mock_aws` (marked integration);
- `concurrent_store` adds `dynamodb-server`: the adapter over HTTP against a moto server that
  answers one request at a time.

Why a serial server for the thread test: moto's DynamoDB backend takes no lock. Its
TransactWriteItems deep-copies the table, checks the conditions, writes, and on cancellation puts
the copy back, erasing what other threads wrote meanwhile; the deep copy itself can fail with
"dictionary changed size during iteration". Measured with 24 threads x 25 rounds and a 0.1 ms GIL
switch interval: under `mock_aws` 67 "winners" for 25 rounds (12 rounds with more than one, their
acknowledged events overwritten) and 49 RuntimeErrors; `ThreadedMotoServer` (one thread per request)
27 winners. At the default 5 ms interval both happened to give 25 winners: the race window is
shorter than a GIL slice, so a pass there proves nothing. A server that handles one request at a
time is linearisable, as DynamoDB is for the items of a transaction, so the test answers truly:
whether the adapter's conditions admit exactly one writer per version.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from escore.dynamodb_store import DynamoDBEventStore
from escore.memory_store import InMemoryEventStore
from escore.store import EventStore
from escore.upcasting import UpcasterRegistry
from tests.contract.kit import EVENT_STORE_TABLE
from tests.support.aws import create_table


@pytest.fixture
def upcasters() -> UpcasterRegistry:
    """A private registry: a test registers steps on it without touching the application's."""
    return UpcasterRegistry()


@pytest.fixture
def mocked_dynamodb() -> Iterator[Any]:
    from moto import mock_aws

    with mock_aws():
        yield boto3.client("dynamodb", region_name="us-east-1")


@pytest.fixture(scope="session")
def serial_moto_endpoint() -> Iterator[str]:
    """A moto server on a free port that handles one request at a time (see the module docstring)."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    server = make_server(
        "127.0.0.1",
        0,
        DomainDispatcherApplication(create_backend_app),
        threaded=False,
        request_handler=MotoRequestHandler,
    )
    thread = threading.Thread(target=server.serve_forever, name="serial-moto", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def server_client(endpoint: str) -> Any:
    config = Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 3})
    return boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint, config=config)


def make_store(kind: str, upcasters: UpcasterRegistry, request: pytest.FixtureRequest) -> EventStore:
    if kind == "memory":
        return InMemoryEventStore(upcasters=upcasters)
    if kind == "dynamodb":
        client = request.getfixturevalue("mocked_dynamodb")
    else:  # dynamodb-server
        client = server_client(request.getfixturevalue("serial_moto_endpoint"))
    name = create_table(client, EVENT_STORE_TABLE, f"{EVENT_STORE_TABLE.logical_name}-{uuid.uuid4().hex[:8]}")
    return DynamoDBEventStore(name, client=client, upcasters=upcasters)


@pytest.fixture(
    params=[
        pytest.param("memory", marks=pytest.mark.unit),
        pytest.param("dynamodb", marks=pytest.mark.integration),
    ]
)
def store(request: pytest.FixtureRequest, upcasters: UpcasterRegistry) -> EventStore:
    return make_store(request.param, upcasters, request)


@pytest.fixture(
    params=[
        pytest.param("memory", marks=pytest.mark.unit),
        pytest.param("dynamodb-server", marks=pytest.mark.integration),
    ]
)
def concurrent_store(request: pytest.FixtureRequest, upcasters: UpcasterRegistry) -> EventStore:
    return make_store(request.param, upcasters, request)
