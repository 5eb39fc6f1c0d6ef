"""Run every benchmark module in bench/ (each exposes `main(argv)`), one after another."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> None:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        runner = getattr(module, "main", None)
        if callable(runner):
            print(f"== bench.{name}", flush=True)
            sys.argv = [f"bench.{name}"]  # each bench parses its own (default) arguments
            runner()
    sys.exit(0)


if __name__ == "__main__":
    main()
