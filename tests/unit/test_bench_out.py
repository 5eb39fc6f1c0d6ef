"""`make bench` (`python -m bench --out DIR`) writes every result into DIR, never over the committed
bench/results/ unless DIR is bench/results."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from types import ModuleType

import pytest

import bench.__main__ as runner

pytestmark = pytest.mark.unit


def test_every_benchmark_is_pointed_at_the_out_folder(tmp_path: Path) -> None:
    names = [n for n in runner.benchmarks() if callable(getattr(importlib.import_module(f"bench.{n}"), "main", None))]
    assert {"cost", "local_pipeline", "replay"} <= set(names)
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        saved = getattr(module, "RESULTS", None)
        try:
            argv = runner.redirect(name, module, tmp_path)
            assert argv[0] == f"bench.{name}"
            source = inspect.getsource(module.main)
            if name in runner.OUT_ARGUMENTS:
                assert str(tmp_path / f"{name}.json") in argv
            else:
                # everything it writes goes through RESULTS, now the out folder
                assert getattr(module, "RESULTS", None) == tmp_path, name
                assert "REPO /" not in source and "BENCHMARKS" not in source, name
        finally:
            if saved is not None:
                module.RESULTS = saved


def test_the_runner_runs_each_main_with_its_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, list[str], Path]] = []
    fake = ModuleType("bench.fake")
    fake.RESULTS = Path("bench/results")  # type: ignore[attr-defined]

    def main() -> None:
        import sys
        seen.append(("fake", list(sys.argv), fake.RESULTS))  # type: ignore[attr-defined]

    fake.main = main  # type: ignore[attr-defined]
    monkeypatch.setattr(runner.importlib, "import_module", lambda name: fake)
    monkeypatch.setattr(runner.sys, "argv", ["bench"])
    monkeypatch.delenv("EVENTSTACK_BENCH_RESULTS", raising=False)
    with pytest.raises(SystemExit) as done:
        runner.main(["--out", str(tmp_path / "out"), "fake"])
    assert done.value.code == 0
    assert seen == [("fake", ["bench.fake"], (tmp_path / "out").resolve())]
    assert (tmp_path / "out").is_dir()
