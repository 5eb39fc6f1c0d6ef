"""One service: event store, stream, publisher, projections, API, archive delivery, monitoring.

Other services' streams are looked up by deterministic ARN (never imported from their stacks),
so this stack deploys alone and subscribing to a stream leaves its producer untouched.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_kinesis as kinesis
from constructs import Construct

from escore.settings import ApiSettings
from eventstack.topology import Service, Topology
from infra.api import ServiceApi
from infra.archive import ArchiveDelivery
from infra.auth import UserPool
from infra.bundling import lambda_code
from infra.event_store import EventStore
from infra.event_stream import EventStream
from infra.functions import FunctionSpec, ServiceFunction
from infra.monitoring import MonitoredService, ServiceMonitoring
from infra.projector import Projector
from infra.publisher import Publisher
from infra.stages import StageSettings
from infra.tables import grant_projection_table


class ServiceStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageSettings,
        topology: Topology,
        service: Service,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.service = service
        # one asset per stack, same hash; none when the functions are a container image
        code = lambda_code(with_dependencies=stage.bundle_dependencies) if stage.packaging == "zip" else None
        self.event_store = EventStore(self, "EventStore", stage=stage, service=service)
        self.event_stream = EventStream(self, "EventStream", stage=stage, service=service)
        self.publisher = Publisher(
            self,
            "Publisher",
            stage=stage,
            service=service,
            event_store=self.event_store.table,
            stream=self.event_stream.stream,
            code=code,
        )

        streams: dict[str, kinesis.IStream] = {service.name: self.event_stream.stream}
        for source in sorted({s for p in service.projections for s in p.sources} - {service.name}):
            streams[source] = EventStream.lookup(
                self, f"Stream-{source}", stage=stage, service=topology.service(source)
            )
        self.projectors = [
            Projector(
                self,
                f"Projection-{p.name}",
                stage=stage,
                owner=service.name,
                projection=p,
                streams=streams,
                code=code,
            )
            for p in service.projections
        ]

        self.api_function = ServiceFunction(
            self,
            "ApiFunction",
            stage=stage,
            code=code,
            spec=FunctionSpec(
                name=service.api_function_name,
                handler=service.api_handler,
                service=service.name,
                description=f"{service.name} commands and queries behind API Gateway",
                environment=ApiSettings.environment(service.name, self.event_store.table.table_name),
                memory_mb=512,
                timeout_seconds=10,
            ),
        )
        self.event_store.table.grant_read_write_data(self.api_function.function)
        for projector in self.projectors:  # the service's API reads the read models it owns
            grant_projection_table(
                self.api_function,
                stage=stage,
                projection=projector.projection,
                table=projector.table,
                write=False,
            )
        user_pool = UserPool.lookup(self, "UserPool", stage=stage) if stage.auth == "cognito" else None
        self.api = ServiceApi(
            self, "Api", stage=stage, service=service, function=self.api_function, user_pool=user_pool
        )

        self.archive = ArchiveDelivery(
            self,
            "Archive",
            stage=stage,
            topology=topology,
            service=service.name,
            stream=self.event_stream.stream,
        )

        self.mappings = [self.publisher.mapping, *(m for p in self.projectors for m in p.mappings)]
        functions = [self.api_function, self.publisher.function, *(p.function for p in self.projectors)]
        self.monitoring = ServiceMonitoring(
            self,
            "Monitoring",
            stage=stage,
            service=service.name,
            monitored=MonitoredService(
                functions=functions, mappings=self.mappings, archive=self.archive, api=self.api.rest_api
            ),
        )
        CfnOutput(self, "EventStoreTable", value=self.event_store.table.table_name)
        CfnOutput(self, "EventStreamName", value=self.event_stream.stream.stream_name)
