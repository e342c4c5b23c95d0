"""`benchmarks/sweep_overhead.py --quick` runs both sides for real and appends a well-formed table.

The script runs as a subprocess with `MTSWEEP_BENCHMARK_RESULTS` pointing at a file in the test's
temporary folder, so benchmarks/RESULTS.md stays as it was. It starts its own embedded Ray (through
`mtsweep launch`) and two plain Optuna processes; about a minute on 2 idle CPUs.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "sweep_overhead.py"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
TIMEOUT_S = 600  # a generous ceiling for a busy machine; the quick run takes about a minute on 2 idle CPUs

HEADER = ["measure", "mtsweep launch", "plain optuna, 2 processes", "goal"]
# Rows with a number in both side columns, then the ratio rows with a number in the mtsweep column only.
BOTH_SIDES = [
    "whole wall (s)",
    "trials wall, first start to last end (s)",
    "outside the trials: start-up and shutdown (s)",
    "mean trial time (s)",
    "ideal wall = sum of trial times / 2 (s)",
    "trials wall / ideal",
    "mean gap between trials on a CPU (s)",
    "per trial: time between epochs outside training (s)",
    "CPU utilization, whole wall",
    "CPU utilization, trials wall",
]
RATIOS = [
    "wall ratio mtsweep / optuna, whole",
    "wall ratio mtsweep / optuna, trials",
    "mean trial time ratio mtsweep / optuna",
]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _number(cell: str) -> float:
    value = float(cell)
    assert math.isfinite(value), cell
    return value


def _table(text: str) -> dict[str, list[str]]:
    """Return the one table of the appended section as {measure: its cells}, after checking its shape."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert _cells(lines[0]) == HEADER
    assert _cells(lines[1]) == ["---"] * len(HEADER)
    rows = [_cells(line) for line in lines[2:]]
    assert all(len(row) == len(HEADER) for row in rows), rows
    return {row[0]: row[1:] for row in rows}


def test_quick_run_appends_overhead_table(tmp_path: Path) -> None:
    results = tmp_path / "results.md"
    recorded = _digest(RESULTS_MD)
    env = {**os.environ, "MTSWEEP_BENCHMARK_RESULTS": str(results)}

    completed = subprocess.run([sys.executable, str(SCRIPT), "--quick"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=TIMEOUT_S, check=False)

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert _digest(RESULTS_MD) == recorded, "the quick run changed benchmarks/RESULTS.md"
    text = results.read_text()
    assert text.count("\n## ") == 1, text
    assert "## Sweep overhead: mtsweep launch against plain Optuna (4 trials, 2 CPUs)" in text
    for label in ("Command: `python ", "Date: ", "Machine: "):
        assert label in text, label
    table = _table(text)
    assert list(table) == BOTH_SIDES + RATIOS
    for measure in BOTH_SIDES:
        mtsweep, optuna = (_number(cell) for cell in table[measure][:2])
        if measure.startswith(("whole wall", "trials wall,", "mean trial", "ideal wall")):
            assert mtsweep > 0, measure
            assert optuna > 0, measure
    for measure in RATIOS:
        assert _number(table[measure][0]) > 0, measure
    for measure in ("CPU utilization, whole wall", "CPU utilization, trials wall"):
        assert all(0 < _number(cell) <= 1.05 for cell in table[measure][:2]), table[measure]
    assert table["CPU utilization, whole wall"][2] == ">= 0.90"
    assert table["wall ratio mtsweep / optuna, whole"][2] == "<= 1.10"
