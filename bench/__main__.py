"""Run every benchmark module in bench/ (each exposes `main`), one after another, writing every result
into one folder: `python -m bench --out DIR` (default bench/out/, ignored by git, so a run never rewrites
the committed results; `make bench BENCH_OUT=bench/results` replaces them, on purpose).

The modules write their results to their module-level `RESULTS` folder (bench/results/): pointed at DIR
here for the run. bench.cost takes `--out`/`--md` (its Markdown otherwise goes to BENCHMARKS.md): given
them. `EVENTSTACK_BENCH_RESULTS` is set to DIR too, for modules that read it."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "out"

# Arguments a module needs so that it writes into `out` (beyond its RESULTS folder).
OUT_ARGUMENTS: dict[str, Callable[[Path], list[str]]] = {
    "cost": lambda out: ["--out", str(out / "cost.json"), "--md", str(out / "cost.md"),
                         "--before", str(HERE / "results" / "cost-before.json")],
}


def benchmarks() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if not m.name.startswith("_"))


def redirect(name: str, module: ModuleType, out: Path) -> list[str]:
    """Point the module's output at `out`; return the argv its main is to parse."""
    if hasattr(module, "RESULTS"):
        module.RESULTS = out
    return [f"bench.{name}", *OUT_ARGUMENTS.get(name, lambda _: [])(out)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for every result (default bench/out)")
    parser.add_argument("names", nargs="*", help="only these benchmarks (default: every one)")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["EVENTSTACK_BENCH_RESULTS"] = str(out)
    for name in args.names or benchmarks():
        module = importlib.import_module(f"bench.{name}")
        runner = getattr(module, "main", None)
        if callable(runner):
            print(f"== bench.{name} -> {out}", flush=True)
            sys.argv = redirect(name, module, out)  # each bench parses its own arguments
            runner()
    sys.exit(0)


if __name__ == "__main__":
    main()
