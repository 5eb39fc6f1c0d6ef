"""The one way the CLI and the local runtime load Lambda code from `lambdas/`.

`lambdas/` is the functions' asset root: its packages (escore, posts, profiles, publisher, and
any service added beside them) import each other as top-level packages, as they do inside a
function. An installed checkout (`pip install -e .`) finds them through setuptools; a plain
checkout needs the folder on `sys.path`, which `ensure_lambdas_importable` adds.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

LAMBDAS_DIR = Path(__file__).resolve().parents[1] / "lambdas"

Handler = Callable[[dict[str, Any], Any], Any]


def ensure_lambdas_importable() -> None:
    if LAMBDAS_DIR.is_dir() and str(LAMBDAS_DIR) not in sys.path:
        sys.path.append(str(LAMBDAS_DIR))


def import_lambda_module(name: str) -> ModuleType:
    """A module of `lambdas/`, e.g. `posts.domain`; ImportError names it if it is not there."""
    ensure_lambdas_importable()
    return importlib.import_module(name)


def load_builder(handler: str) -> Callable[..., Handler]:
    """`posts.api.handler` -> the `build(env, **collaborators)` function of module `posts.api`."""
    module_name, _, _attribute = handler.rpartition(".")
    build = getattr(import_lambda_module(module_name), "build", None)
    if not callable(build):
        raise RuntimeError(f"{module_name} has no build(env, **collaborators) (docs/architecture.md)")
    return build  # type: ignore[no-any-return]
