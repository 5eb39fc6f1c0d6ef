"""The handlers' configuration: typed, parsed once at cold start, and built by the same code.

Each kind of function reads one settings model from its environment (`from_env`), and the CDK
app and the local runtime write that environment with the model's own `environment(...)`, so the
variable names (escore.naming) are spelled in one place and a missing or malformed value is a
clear `ConfigError` at cold start, not a KeyError on the first request.

Several functions share one process in the local runtime, so `os.environ` cannot differ between
them: `from_env` reads the mapping it is given (os.environ on Lambda) through pydantic-settings'
own environment source.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from escore import naming
from escore.runtime import ConfigError

_ENV: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("eventstack_settings_env")


class TableNotConfigured(ConfigError):
    """Neither a pointer nor the `<NAME>_TABLE` variable names a projection's table."""


class _MappingSource(EnvSettingsSource):
    """pydantic-settings' environment source over the mapping `from_env` was given."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(_ENV.get(), self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        prefix = env_settings.env_prefix if isinstance(env_settings, EnvSettingsSource) else None
        return init_settings, _MappingSource(settings_cls, env_prefix=prefix)

    @classmethod
    def from_env(cls, env: Mapping[str, str], **init: Any) -> Self:
        token = _ENV.set(env)
        try:
            return cls(**init)
        except ValidationError as exc:
            problems = "; ".join(f"{_name(cls, e, init)}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{cls.__name__}: {problems}") from None
        finally:
            _ENV.reset(token)


def _name(cls: type[_Settings], error: Any, init: Mapping[str, Any]) -> str:
    field = str(error["loc"][0]) if error.get("loc") else "?"
    info = cls.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    return str(alias) if isinstance(alias, str) else str(init.get("_env_prefix") or "") + field.upper()


class ServiceSettings(_Settings):
    """What every function of a service reads: its name (logs, metrics, event metadata)."""

    service_name: str = Field(min_length=1, validation_alias=naming.ENV_SERVICE)

    @staticmethod
    def environment(service: str) -> dict[str, str]:
        return {naming.ENV_SERVICE: service}


class ApiSettings(ServiceSettings):
    """A service's API function: its event store, and how often it snapshots an aggregate.

    The table may be absent only when the function is built with a store of its own (tests)."""

    event_store_table: str | None = Field(default=None, min_length=1, validation_alias=naming.ENV_EVENT_STORE_TABLE)
    snapshot_every: int = Field(default=0, ge=0, validation_alias=naming.ENV_SNAPSHOT_EVERY)

    @staticmethod
    def environment(service: str, event_store_table: str = "") -> dict[str, str]:
        return {**ServiceSettings.environment(service), naming.ENV_EVENT_STORE_TABLE: event_store_table}


class PublisherSettings(_Settings):
    """A service's publisher: the event store whose change stream it relays, and the stream.
    (Its service name is only for logs and metrics, which Powertools reads itself.)"""

    event_store_table: str = Field(min_length=1, validation_alias=naming.ENV_EVENT_STORE_TABLE)
    event_stream_name: str = Field(min_length=1, validation_alias=naming.ENV_STREAM_NAME)

    @staticmethod
    def environment(service: str, event_store_table: str = "", stream: str = "") -> dict[str, str]:
        return {
            **ServiceSettings.environment(service),
            naming.ENV_EVENT_STORE_TABLE: event_store_table,
            naming.ENV_STREAM_NAME: stream,
        }


class ProjectorSettings(_Settings):
    """A projector: the module of its projection's folds (escore.projector_lambda runs them).
    (Its service name is only for logs and metrics, which Powertools reads itself.)"""

    projection_module: str = Field(min_length=1, validation_alias=naming.ENV_PROJECTION_MODULE)

    @staticmethod
    def environment(service: str, projection_module: str = "") -> dict[str, str]:
        return {**ServiceSettings.environment(service), naming.ENV_PROJECTION_MODULE: projection_module}


class NotifierSettings(_Settings):
    """Where a projection's effects send notifications: SNS (the topic's ARN), or the log (local)."""

    notifier: Literal["sns", "log"] = Field(default="sns", validation_alias=naming.ENV_NOTIFIER)
    topic_arn: str | None = Field(default=None, min_length=1, validation_alias=naming.ENV_NOTIFICATION_TOPIC_ARN)

    @model_validator(mode="after")
    def _topic_for_sns(self) -> Self:
        if self.notifier == "sns" and not self.topic_arn:
            raise ValueError(f"{naming.ENV_NOTIFICATION_TOPIC_ARN} is required when {naming.ENV_NOTIFIER} is sns")
        return self

    @staticmethod
    def environment(topic_arn: str | None) -> dict[str, str]:
        """SNS on `topic_arn`; None: the log (the local runtime)."""
        if topic_arn is None:
            return {naming.ENV_NOTIFIER: "log"}
        return {naming.ENV_NOTIFIER: "sns", naming.ENV_NOTIFICATION_TOPIC_ARN: topic_arn}


class ProjectionTable(_Settings):
    """A projection's table as a function that reads or writes it finds it (escore.tables).

    `table`: the table it started with (`<NAME>_TABLE`); `table_parameter`: its active-table
    pointer (`<NAME>_TABLE_PARAMETER`), which `replay --into new` switches. At least one is set.
    """

    table: str | None = None
    table_parameter: str | None = None

    @classmethod
    def of(cls, env: Mapping[str, str], projection: str) -> ProjectionTable:
        found = cls.from_env(env, _env_prefix=naming.projection_env_prefix(projection))
        if not (found.table or found.table_parameter):
            raise TableNotConfigured(
                f"set {naming.table_env(projection)} (and optionally {naming.table_parameter_env(projection)})"
            )
        return found

    @staticmethod
    def environment(projection: str, table: str, parameter: str | None) -> dict[str, str]:
        env = {naming.table_env(projection): table}
        if parameter is not None:
            env[naming.table_parameter_env(projection)] = parameter
        return env
