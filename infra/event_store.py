"""A service's event store: the table its API appends to, whose change stream feeds the publisher."""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from eventstack.topology import Service
from infra.stages import StageSettings
from infra.tables import topology_table


class EventStore(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, stage: StageSettings, service: Service
    ) -> None:
        super().__init__(scope, construct_id)
        self.declaration = service.event_store
        self.table: dynamodb.Table = topology_table(self, "Table", stage, self.declaration)
