"""The Lambda asset: lambdas/ plus its pinned dependencies, built for arm64 without Docker.

`pip install --platform manylinux2014_aarch64 --only-binary=:all: --target` fetches the arm64
wheels of lambdas/requirements.txt whatever the build machine is. The installed tree is cached
under ~/.cache/eventstack/lambda-deps/<hash of requirements + target> (or $EVENTSTACK_BUNDLE_CACHE),
so only the first synth after a requirements change needs the network.

Context `bundle_dependencies=false` copies the code only. The template tests use it so that they
run offline in seconds; the asset hash differs (see `_marker`), so such an asset can never be
mistaken for a deployable one, and every stack gets a warning annotation.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parent.parent
LAMBDAS_DIR = REPO_ROOT / "lambdas"
REQUIREMENTS = LAMBDAS_DIR / "requirements.txt"

# The newest Python runtime this CDK version offers; the wheels are fetched for it.
RUNTIME = lambda_.Runtime.PYTHON_3_14
PYTHON_VERSION = "3.14"
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64")
# Shipped by the Lambda runtime as a matched pair; a second, different botocore would shadow it.
PROVIDED_BY_RUNTIME = ("boto3", "botocore", "s3transfer")
IGNORED = ("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache", "*.egg-info", ".DS_Store", "Dockerfile")
DOCKERFILE = LAMBDAS_DIR / "Dockerfile"


def _requirements_key() -> str:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(f"{PYTHON_VERSION}|{','.join(PLATFORMS)}|{','.join(PROVIDED_BY_RUNTIME)}|v1".encode())
    return digest.hexdigest()[:20]


def _cache_root() -> Path:
    if custom := os.environ.get("EVENTSTACK_BUNDLE_CACHE"):
        return Path(custom)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "eventstack" / "lambda-deps"


def installed_dependencies() -> Path:
    """The directory holding the arm64 dependencies, installing them on a cache miss."""
    target = _cache_root() / _requirements_key()
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".install-", dir=target.parent))
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        *[arg for platform in PLATFORMS for arg in ("--platform", platform)],
        "--implementation",
        "cp",
        "--python-version",
        PYTHON_VERSION,
        "--only-binary=:all:",
        "--target",
        str(staging),
        "--requirement",
        str(REQUIREMENTS),
    ]
    try:
        subprocess.run(command, check=True)
    except (subprocess.CalledProcessError, OSError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(
            "could not install the Lambda dependencies for arm64 (is PyPI reachable?). "
            "Template tests may synth with `-c bundle_dependencies=false`; a deployable synth cannot."
        ) from error
    for entry in list(staging.iterdir()):
        name = entry.name.split("-")[0].lower()
        if name in PROVIDED_BY_RUNTIME or entry.name == "bin":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    try:
        staging.rename(target)
    except OSError:  # another synth filled the cache first
        shutil.rmtree(staging, ignore_errors=True)
    return target


@jsii.implements(ILocalBundling)
class _LocalBundler:
    def __init__(self, with_dependencies: bool) -> None:
        self._with_dependencies = with_dependencies

    def try_bundle(self, output_dir: str, _options: Any = None) -> bool:
        out = Path(output_dir)
        if self._with_dependencies:
            shutil.copytree(installed_dependencies(), out, dirs_exist_ok=True)
        shutil.copytree(LAMBDAS_DIR, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*IGNORED))
        return True


def _marker(with_dependencies: bool) -> str:
    return f"deps-{_requirements_key()}" if with_dependencies else "code-only"


def lambda_code(with_dependencies: bool = True) -> lambda_.Code:
    """One asset for every function: same hash, so CDK stages and uploads it once per stack set."""
    return lambda_.Code.from_asset(
        str(LAMBDAS_DIR),
        exclude=list(IGNORED),
        asset_hash_type=AssetHashType.SOURCE,
        bundling=BundlingOptions(
            # Never pulled: local bundling always succeeds or raises. CDK requires an image.
            image=DockerImage.from_registry(f"public.ecr.aws/sam/build-python{PYTHON_VERSION}"),
            local=_LocalBundler(with_dependencies),
            # Part of the asset hash: a code-only bundle never shares a hash with a full one.
            environment={"EVENTSTACK_BUNDLE": _marker(with_dependencies)},
        ),
    )


def image_code(handler: str) -> lambda_.DockerImageCode:
    """The functions' container image (lambdas/Dockerfile), for arm64, with `handler` as its CMD.

    Synth only stages the build context (lambdas/) into cdk.out; the image is built and pushed by
    `cdk deploy`, which needs Docker. Every function shares the one image asset (the CMD is part of
    each function's image configuration, not of the asset)."""
    return lambda_.DockerImageCode.from_image_asset(
        str(LAMBDAS_DIR),
        cmd=[handler],
        platform=ecr_assets.Platform.LINUX_ARM64,
        # .dockerignore semantics: a bare name matches at the top only
        exclude=[f"**/{pattern}" for pattern in IGNORED if pattern != "Dockerfile"],
    )
