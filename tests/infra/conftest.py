"""The infra tier synthesizes twice per test run, once per configuration, and shares the result.

- `dev`: the default stage with default options (IAM auth, governance Object Lock).
- `prod`: the prod stage with both non-default options (Cognito auth, compliance Object Lock).

Both skip pip (`bundle_dependencies=false`, see infra/bundling.py): offline and fast.
cdk-nag runs inside each synth; its report (validation-report.json) is kept for test_nag.py.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

CONFIGURATIONS: dict[str, dict[str, str]] = {
    "dev": {"stage": "dev"},
    "prod": {"stage": "prod", "auth": "cognito", "object_lock_mode": "compliance"},
}


@dataclass
class Synth:
    name: str
    context: dict[str, str]
    outdir: Path
    seconds: float
    error: str | None = None
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)  # stack name -> template

    @property
    def stage(self) -> str:
        return self.context["stage"]

    def report(self) -> dict[str, Any]:
        path = self.outdir / "validation-report.json"
        return json.loads(path.read_text()) if path.exists() else {"pluginReports": []}

    def template(self, stack: str) -> dict[str, Any]:
        return self.templates[f"eventstack-{self.stage}-{stack}"]

    def resources(self, resource_type: str, stack: str | None = None) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for name, template in self.templates.items():
            if stack is None or name == f"eventstack-{self.stage}-{stack}":
                for logical_id, resource in template.get("Resources", {}).items():
                    if resource["Type"] == resource_type:
                        found[f"{name}/{logical_id}"] = resource
        return found


def _synthesize(name: str, context: dict[str, str], outdir: Path) -> Synth:
    from aws_cdk import App

    from infra.application import build, context_defaults

    started = time.perf_counter()
    app = App(context={**context_defaults(), **context, "bundle_dependencies": "false"}, outdir=str(outdir))
    build(app)
    error = None
    try:
        app.synth()
    except RuntimeError as exc:  # ValidationFailed: templates and report are written all the same
        error = str(exc)
    synth = Synth(name, context, outdir, time.perf_counter() - started, error)
    for path in sorted(outdir.glob("*.template.json")):
        synth.templates[path.name.removesuffix(".template.json")] = json.loads(path.read_text())
    return synth


@pytest.fixture(scope="session")
def synths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Synth]]:
    results = {
        name: _synthesize(name, context, tmp_path_factory.mktemp(f"cdk-{name}"))
        for name, context in CONFIGURATIONS.items()
    }
    yield results


@pytest.fixture(scope="session")
def dev(synths: dict[str, Synth]) -> Synth:
    return synths["dev"]


@pytest.fixture(scope="session")
def prod(synths: dict[str, Synth]) -> Synth:
    return synths["prod"]


@pytest.fixture(scope="session", params=list(CONFIGURATIONS))
def each(request: pytest.FixtureRequest, synths: dict[str, Synth]) -> Synth:
    synth: Synth = synths[request.param]
    return synth
