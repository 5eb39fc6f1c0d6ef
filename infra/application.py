"""Builds the whole app from the topology: the shared stack and one stack per service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aws_cdk import Annotations, App, Tags

from eventstack.topology import TOPOLOGY, Topology
from infra import nag, naming
from infra.stacks.service import ServiceStack
from infra.stacks.shared import SharedStack
from infra.stages import StageSettings, from_context

CDK_JSON = Path(__file__).resolve().parent.parent / "cdk.json"


def context_defaults() -> dict[str, Any]:
    """cdk.json's context (feature flags, default stage), for synths that bypass the CDK CLI."""
    context: dict[str, Any] = json.loads(CDK_JSON.read_text())["context"]
    return context


def build(
    app: App, topology: Topology = TOPOLOGY
) -> tuple[StageSettings, SharedStack, dict[str, ServiceStack]]:
    stage = from_context(app)
    Tags.of(app).add("project", naming.PROJECT)
    Tags.of(app).add("stage", stage.name)

    shared = SharedStack(
        app,
        naming.shared_stack(stage.name),
        stage=stage,
        description=f"eventstack {stage.name}: archive bucket, alarm topic, account settings",
    )
    services: dict[str, ServiceStack] = {}
    for service in topology.services:
        stack = ServiceStack(
            app,
            naming.service_stack(stage.name, service.name),
            stage=stage,
            topology=topology,
            service=service,
            description=f"eventstack {stage.name}: the {service.name} service",
        )
        Tags.of(stack).add("service", service.name)
        # Deploy order only (no exports): the bucket must exist before Firehose writes to it.
        stack.add_stack_dependency(shared)
        services[service.name] = stack
    for subscription in topology.subscriptions:
        if subscription.source != subscription.owner:
            # The producer's stream must exist before the consumer's mapping; no template coupling.
            services[subscription.owner].add_stack_dependency(services[subscription.source])
    if not stage.bundle_dependencies:
        for stack in (shared, *services.values()):
            Annotations.of(stack).add_warning_v2(
                "eventstack:code-only",
                "Lambda dependencies NOT bundled (bundle_dependencies=false): for template tests only, never deploy",
            )
    nag.check(app)
    return stage, shared, services
