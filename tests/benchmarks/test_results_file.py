"""`append_result` writes to `$MTSWEEP_BENCHMARK_RESULTS` when it is set, to RESULTS.md otherwise."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

RESULTS_MODULE = Path(__file__).resolve().parents[2] / "benchmarks" / "results.py"


@pytest.fixture()
def results() -> ModuleType:
    """Load benchmarks/results.py from its file, because `benchmarks` is not an installed package."""
    spec = importlib.util.spec_from_file_location("benchmark_results_under_test", RESULTS_MODULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_env_variable_redirects_append(results: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.md"
    monkeypatch.setenv("MTSWEEP_BENCHMARK_RESULTS", str(target))
    before = results.RESULTS_PATH.read_bytes() if results.RESULTS_PATH.exists() else b""

    results.append_result("Redirected", results.markdown_table(["a", "b"], [[1, 2.5]]), notes="A note.")

    text = target.read_text()
    assert text.startswith("# Benchmark results\n")
    assert "## Redirected\n" in text
    assert "| a | b |\n| --- | --- |\n| 1 | 2.5 |\n" in text
    assert text.endswith("A note.\n\n")
    assert (results.RESULTS_PATH.read_bytes() if results.RESULTS_PATH.exists() else b"") == before


def test_env_variable_appends_sections(results: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.md"
    monkeypatch.setenv("MTSWEEP_BENCHMARK_RESULTS", str(target))

    results.append_result("First", results.markdown_table(["x"], [[1]]))
    results.append_result("Second", results.markdown_table(["x"], [[2]]))

    text = target.read_text()
    assert text.count("# Benchmark results") == 1
    assert text.index("## First") < text.index("## Second")


def test_results_path_default_and_override(results: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MTSWEEP_BENCHMARK_RESULTS", raising=False)
    assert results.results_path() == results.RESULTS_PATH
    monkeypatch.setenv("MTSWEEP_BENCHMARK_RESULTS", "")
    assert results.results_path() == results.RESULTS_PATH
    monkeypatch.setenv("MTSWEEP_BENCHMARK_RESULTS", str(tmp_path / "x.md"))
    assert results.results_path() == tmp_path / "x.md"


def test_explicit_path_beats_env_variable(results: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTSWEEP_BENCHMARK_RESULTS", str(tmp_path / "env.md"))

    results.append_result("Explicit", results.markdown_table(["x"], [[1]]), path=tmp_path / "explicit.md")

    assert (tmp_path / "explicit.md").is_file()
    assert not (tmp_path / "env.md").exists()


@pytest.mark.parametrize("argv, quick", [(["step_cost.py", "--quick"], True), (["step_cost.py"], False)])
def test_quick_run_gets_note(results: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], quick: bool) -> None:
    target = tmp_path / "out.md"
    monkeypatch.setattr("sys.argv", argv)

    results.append_result("Timed", results.markdown_table(["x"], [[1]]), notes="A note.", path=target)

    text = target.read_text()
    assert ("too short to compare with the goals" in text) == quick
    assert "A note." in text
