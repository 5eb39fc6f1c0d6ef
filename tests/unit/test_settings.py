"""The handlers' typed configuration (escore.settings) and the naming rules it reads (escore.naming)."""

from __future__ import annotations

import pytest

from escore import naming
from escore.runtime import ConfigError
from escore.settings import (
    ApiSettings,
    ProjectionTable,
    PublisherSettings,
    ServiceSettings,
    TableNotConfigured,
)
from eventstack.topology import TOPOLOGY

pytestmark = pytest.mark.unit


def test_each_settings_model_reads_what_its_environment_writes() -> None:
    api = ApiSettings.from_env({**ApiSettings.environment("posts", "posts_events"), naming.ENV_SNAPSHOT_EVERY: "25"})
    assert (api.service_name, api.event_store_table, api.snapshot_every) == ("posts", "posts_events", 25)
    publisher = PublisherSettings.from_env(PublisherSettings.environment("posts", "posts_events", "posts-events"))
    assert (publisher.event_store_table, publisher.event_stream_name) == ("posts_events", "posts-events")
    assert ServiceSettings.from_env(ServiceSettings.environment("profiles")).service_name == "profiles"
    table = ProjectionTable.of(ProjectionTable.environment("user_timeline", "t1", "/p"), "user_timeline")
    assert (table.table, table.table_parameter) == ("t1", "/p")


def test_settings_read_the_mapping_given_not_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(naming.ENV_STREAM_NAME, "from-os-environ")
    monkeypatch.setenv(naming.ENV_EVENT_STORE_TABLE, "from-os-environ")
    with pytest.raises(ConfigError, match="EVENT_STREAM_NAME: Field required"):
        PublisherSettings.from_env({naming.ENV_EVENT_STORE_TABLE: "t"})


def test_a_bad_value_is_one_clear_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        ApiSettings.from_env({naming.ENV_SERVICE: "posts", naming.ENV_SNAPSHOT_EVERY: "often"})
    assert "SNAPSHOT_EVERY" in str(caught.value) and "integer" in str(caught.value)
    with pytest.raises(ConfigError, match="SNAPSHOT_EVERY"):
        ApiSettings.from_env({naming.ENV_SERVICE: "posts", naming.ENV_SNAPSHOT_EVERY: "-1"})
    with pytest.raises(ConfigError, match="SERVICE_NAME"):
        ServiceSettings.from_env({naming.ENV_SERVICE: ""})


def test_a_projection_needs_its_table_or_its_pointer() -> None:
    with pytest.raises(TableNotConfigured, match="USER_TIMELINE_TABLE"):
        ProjectionTable.of({"USER_PROFILES_TABLE": "other projection's"}, "user_timeline")
    assert ProjectionTable.of({"USER_TIMELINE_TABLE_PARAMETER": "/p"}, "user_timeline").table is None


def test_every_name_of_the_topology_follows_the_naming_rules() -> None:
    for service in TOPOLOGY.services:
        assert service.event_store.logical_name == naming.event_store_table(service.name)
        assert service.stream_logical_name == naming.stream(service.name)
        assert service.publisher_function_name == naming.publisher_function(service.name)
    for subscription in TOPOLOGY.subscriptions:
        assert subscription.name == naming.subscription(subscription.projection.name, subscription.source)
        assert subscription.projection.function_name == naming.projector_function(subscription.projection.name)
    assert naming.physical("dev", naming.dlq("posts-publisher")) == "eventstack-dev-posts-publisher-dlq"
    assert naming.table_parameter("dev", "user_timeline") == "/eventstack/dev/projections/user_timeline/table"
    assert naming.archive_bucket("dev", "123", "eu-west-1") == "eventstack-dev-archive-123-eu-west-1"
