"""A projection: its table, its projector function, and one Kinesis mapping per subscribed stream."""

from __future__ import annotations

from collections.abc import Mapping as MappingOf

from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from constructs import Construct

from escore.settings import ProjectorSettings
from eventstack.topology import Projection, Subscription
from infra import mappings
from infra.dead_letters import FailureQueue
from infra.functions import FunctionSpec, ServiceFunction
from infra.notifications import NotificationTopic
from infra.stages import StageSettings
from infra.tables import grant_projection_table, topology_table


class Projector(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageSettings,
        owner: str,
        projection: Projection,
        streams: MappingOf[str, kinesis.IStream],
        code: lambda_.Code | None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.projection = projection
        self.table = topology_table(self, "Table", stage, projection.table)
        self.function = ServiceFunction(
            self,
            "Function",
            stage=stage,
            code=code,
            spec=FunctionSpec(
                name=projection.function_name,
                handler=projection.handler,
                service=owner,
                description=f"Projects {', '.join(projection.sources)} events into {projection.name}",
                environment=ProjectorSettings.environment(owner, projection.folds),
            ),
        )
        # <NAME>_TABLE, <NAME>_TABLE_PARAMETER, the pointer and every generation of the table.
        grant_projection_table(
            self.function, stage=stage, projection=projection, table=self.table, write=True
        )
        # A projection whose effects notify publishes to a topic of its own (infra/notifications.py).
        self.topic = (NotificationTopic(self, "Notifications", stage=stage, projection=projection, publisher=self.function)
                      if projection.notifies else None)
        self.mappings: list[mappings.Mapping] = []
        for source in projection.sources:
            subscription = Subscription(owner, projection, source)
            queue = FailureQueue(self, f"OnFailure-{source}", stage=stage, mapping_name=subscription.name)
            self.function.function.add_event_source(
                sources.KinesisEventSource(streams[source], **mappings.options(projection.mapping, queue))
            )
            self.mappings.append(mappings.Mapping(subscription.name, source, self.function, queue))
