"""`-c packaging=image`: every function a container image of the same lambdas/ code; zip stays the default.

No Docker engine runs here: synth stages the image's build context into cdk.out without building
it, so these tests read the templates and the asset manifest (what `cdk deploy` would build).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eventstack.topology import TOPOLOGY
from tests.infra.conftest import Synth, _synthesize

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return _synthesize("image", {"stage": "dev", "packaging": "image"}, tmp_path_factory.mktemp("cdk-image"))


def _functions(synth: Synth) -> dict[str, dict[str, Any]]:
    return {
        resource["Properties"]["FunctionName"]: resource["Properties"]
        for resource in synth.resources("AWS::Lambda::Function").values()
    }


def _expected_functions() -> dict[str, str]:
    handlers = {}
    for service in TOPOLOGY.services:
        handlers[f"eventstack-dev-{service.api_function_name}"] = service.api_handler
        handlers[f"eventstack-dev-{service.publisher_function_name}"] = service.publisher_handler
        for projection in service.projections:
            handlers[f"eventstack-dev-{projection.function_name}"] = projection.handler
    return handlers


def test_every_function_is_an_image_with_its_handler_as_command(image: Synth) -> None:
    assert image.error is None, image.error
    functions = _functions(image)
    expected = _expected_functions()
    assert set(expected) <= set(functions)
    for name, handler in expected.items():
        props = functions[name]
        assert props["PackageType"] == "Image", name
        assert props["ImageConfig"]["Command"] == [handler], name
        assert props["Architectures"] == ["arm64"], name
        assert "Runtime" not in props and "Handler" not in props, name
        assert "ImageUri" in props["Code"], name


def test_the_functions_share_one_staged_image_of_the_lambda_code(image: Synth) -> None:
    images: dict[str, Any] = {}
    for manifest in Path(image.outdir).glob("*.assets.json"):
        images.update(json.loads(manifest.read_text()).get("dockerImages", {}))
    assert len(images) == 1, images  # one image for every function of every stack
    (asset,) = images.values()
    assert asset["source"]["platform"] == "linux/arm64"
    context = Path(image.outdir) / asset["source"]["directory"]
    assert (context / "Dockerfile").is_file()
    assert (context / "escore" / "app.py").is_file() and (context / "requirements.txt").is_file()
    assert not list(context.rglob("__pycache__"))


def test_zip_stays_the_default(dev: Synth) -> None:
    for name, props in _functions(dev).items():
        if name in _expected_functions():
            assert props.get("PackageType", "Zip") == "Zip" and props["Handler"], name

