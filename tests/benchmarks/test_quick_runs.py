"""Every benchmark script runs with `--quick` and appends well-formed Markdown sections.

Each script runs as a subprocess with `MTSWEEP_BENCHMARK_RESULTS` pointing at a file in the test's
temporary folder, so benchmarks/RESULTS.md is never written. The checks parse that file. Each
section has a `## ` title and the Command, Date and Machine lines. Each table has the expected
column names, a `---` separator and data rows with as many cells as the header, and finite numbers
in its numeric columns.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
# Seconds one quick run may take before the test fails; the slowest takes about a minute on 2 idle CPUs.
TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """The expected header of one table and which of its columns hold numbers."""

    header: tuple[str, ...]
    numbers: tuple[str, ...] = ()  # columns whose cells must parse as finite floats
    percents: tuple[str, ...] = ()  # columns whose cells must be a finite number followed by %


@dataclasses.dataclass(frozen=True)
class SectionSpec:
    title: str  # the expected start of the `## ` title
    tables: tuple[TableSpec, ...]


@dataclasses.dataclass(frozen=True)
class ScriptSpec:
    script: str
    sections: tuple[SectionSpec, ...]


MTS_GAIN = ScriptSpec("mts_gain.py", (SectionSpec("MTS against uniform on mnist1d_shift", (TableSpec(
    ("method", "pool batch", "test acc", "gain (pts)", "val acc", "GSNR (last)", "GSNR (mean)", "GSNR per sample",
     "B_eff", "weight AUC", "seconds"),
    numbers=("pool batch", "test acc", "gain (pts)", "val acc", "B_eff", "seconds"),
),)),))

STEP_COST = ScriptSpec("step_cost.py", (SectionSpec("MTS step cost against a plain weighted step", (TableSpec(
    ("pool batch", "meta-gradient", "meta_interval", "plain step (ms)", "MTS step (ms)", "ratio"),
    numbers=("pool batch", "meta_interval", "plain step (ms)", "MTS step (ms)", "ratio"),
),)),))

GSNR_COST = ScriptSpec("gsnr_cost.py", (
    SectionSpec("Per-sample meta-gradients: vmap against a loop", (TableSpec(
        ("pool batch", "vmap (ms)", "loop (ms)", "speed-up"),
        numbers=("pool batch", "vmap (ms)", "loop (ms)", "speed-up"),
    ),)),
    SectionSpec("Share of an MTS trial spent measuring GSNR", (TableSpec(
        ("pool batch", "epochs", "every n epochs", "draws K", "measurements", "GSNR seconds", "trial seconds", "share"),
        numbers=("pool batch", "epochs", "every n epochs", "draws K", "measurements", "GSNR seconds", "trial seconds"),
        percents=("share",),
    ),)),
))

FEATURE_COST = ScriptSpec("feature_cost.py", (SectionSpec("Feature cost per MTS epoch on mnist1d_shift", (TableSpec(
    ("features", "seconds per epoch (median)", "vs loss", "preparation seconds"),
    numbers=("seconds per epoch (median)", "preparation seconds"),
    percents=("vs loss",),
),)),))

FEATURE_QUALITY = ScriptSpec("feature_quality.py", (SectionSpec("Feature groups: MTS against MW-Net and uniform", (
    TableSpec(
        ("task", "method", "seeds", "test acc (mean)", "test acc (std)", "gain vs uniform (pts)",
         "weight AUC (mean of last 5 epochs)", "seconds per run"),
        # The standard deviation over one seed is NaN, so that column is left out.
        numbers=("seeds", "test acc (mean)", "gain vs uniform (pts)", "seconds per run"),
    ),
    TableSpec(
        ("task", "source", "tag", "pool samples", "mean raw weight, mts all groups @512"),
        numbers=("pool samples", "mean raw weight, mts all groups @512"),
    ),
    TableSpec(
        ("group alone", "mnist1d_shift weight AUC", "mnist1d_shift test acc", "digits_synth weight AUC", "digits_synth test acc"),
        numbers=("mnist1d_shift test acc", "digits_synth test acc"),
    ),
)),))

ANALYSIS_SPEED = ScriptSpec("analysis_speed.py", (SectionSpec("Analysis speed, 1000 trials x 20 reports", (TableSpec(
    ("command", "seconds"), numbers=("seconds",),
),)),))

SEARCH_EFFICIENCY = ScriptSpec("search_efficiency.py", (SectionSpec("Search efficiency: TPE trials to within 1 point(s)", (
    TableSpec(
        ("objective", "target", "sampler", "replay seeds", "median trials", "p90 trials", "mean trials", "median / grid size",
         "p90 / grid size", "missed (within 10x grid size)"),
        numbers=("replay seeds", "median trials", "p90 trials", "mean trials", "median / grid size", "p90 / grid size",
                 "missed (within 10x grid size)"),
    ),
    TableSpec(
        ("objective", "best config", "best val_gain (pts)", "median val_gain (pts)", "worst val_gain (pts)", "std (pts)",
         "configs within tolerance", "configs failed"),
        numbers=("best val_gain (pts)", "median val_gain (pts)", "worst val_gain (pts)", "std (pts)", "configs within tolerance",
                 "configs failed"),
    ),
    TableSpec(
        ("pool.batch_size", "mts.features", "final epoch (pts) at mts.lr=0.003", "best epoch (pts) at mts.lr=0.003"),
        numbers=("pool.batch_size", "final epoch (pts) at mts.lr=0.003", "best epoch (pts) at mts.lr=0.003"),
    ),
)),))

MNIST1D_SOURCES = ("clean (faithful)", "noisy (harmful)", "scaled (faithful)", "translated (harmful)", "sheared (faithful)",
                   "dilated (harmful)", "mislabeled (harmful)")
SOURCE_ALIGNMENT = ScriptSpec("source_alignment.py", (SectionSpec("One-step alignment with the meta loss, per pool source", (
    TableSpec(
        ("method", "epoch", "val acc", "sample AUC", "source AUC", *MNIST1D_SOURCES),
        numbers=("epoch", "val acc", "sample AUC", "source AUC", *MNIST1D_SOURCES),
    ),
)),))

SCRIPTS = [MTS_GAIN, STEP_COST, GSNR_COST, FEATURE_COST, FEATURE_QUALITY, ANALYSIS_SPEED, SEARCH_EFFICIENCY, SOURCE_ALIGNMENT]


# Parsing the results file ---------------------------------------------------------------------


def split_sections(text: str) -> list[list[str]]:
    """Split a results file into sections, each the list of its lines from its `## ` title on."""
    sections: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("## "):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
    return sections


def split_tables(lines: list[str]) -> list[list[str]]:
    """Return the runs of consecutive lines that start with `|`."""
    tables: list[list[str]] = []
    previous_was_row = False
    for line in lines:
        is_row = line.startswith("|")
        if is_row and not previous_was_row:
            tables.append([])
        if is_row:
            tables[-1].append(line)
        previous_was_row = is_row
    return tables


def cells(row: str) -> list[str]:
    """Return the stripped cells of a Markdown table row `| a | b |`."""
    assert row.startswith("|"), row
    assert row.endswith("|"), row
    return [cell.strip() for cell in row[1:-1].split("|")]


def is_finite_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


# Checks ----------------------------------------------------------------------------------------


def check_header_lines(section: list[str], spec: SectionSpec, script: str) -> None:
    """Check the title, Command, Date and Machine lines at the top of a section."""
    assert section[0].startswith(f"## {spec.title}"), section[0]
    body = [line for line in section[1:] if line.strip()]
    assert body[0].startswith("Command: `python "), body[0]
    assert script in body[0], body[0]
    assert re.fullmatch(r"Date: \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\s*", body[1]), body[1]
    assert re.fullmatch(r"Machine: \d+ CPUs \(.+\), Python \d+\.\d+.*", body[2]), body[2]


def check_table(rows: list[str], spec: TableSpec) -> None:
    """Check one table's shape, header names and numeric columns."""
    header = cells(rows[0])
    assert tuple(header) == spec.header
    separator = cells(rows[1])
    assert len(separator) == len(header)
    assert all(cell == "---" for cell in separator), rows[1]
    data = [cells(row) for row in rows[2:]]
    assert data, "the table has no data row"
    for row in data:
        assert len(row) == len(header), row
        for column in spec.numbers:
            assert is_finite_number(row[header.index(column)]), f"{column}: {row[header.index(column)]!r} in {row}"
        for column in spec.percents:
            value = row[header.index(column)]
            assert value.endswith("%"), f"{column}: {value!r} in {row}"
            assert is_finite_number(value[:-1]), f"{column}: {value!r} in {row}"


def run_quick(script: str, results: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `benchmarks/<script> --quick` with its results redirected to `results`."""
    env = {**os.environ, "MTSWEEP_BENCHMARK_RESULTS": str(results)}
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), "--quick"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )


def read_or_empty(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize("spec", SCRIPTS, ids=[spec.script for spec in SCRIPTS])
def test_quick_run_appends_table(spec: ScriptSpec, tmp_path: Path) -> None:
    results = tmp_path / "results.md"
    before = read_or_empty(RESULTS_MD)

    # The working folder is the temporary one, because feature_quality.py writes its run log there.
    completed = run_quick(spec.script, results, tmp_path)

    assert completed.returncode == 0, completed.stderr[-3000:]
    # Another benchmark run on the same checkout may append to RESULTS.md meanwhile, so the check
    # looks for this quick run's command in the added text rather than for an unchanged file.
    added = read_or_empty(RESULTS_MD).removeprefix(before)
    assert f"{spec.script} --quick" not in added, "the quick run appended to benchmarks/RESULTS.md"
    assert results.is_file(), completed.stderr[-3000:]
    sections = split_sections(results.read_text())
    assert len(sections) == len(spec.sections)
    for section, section_spec in zip(sections, spec.sections):
        check_header_lines(section, section_spec, spec.script)
        tables = split_tables(section)
        assert len(tables) == len(section_spec.tables), section[0]
        for rows, table_spec in zip(tables, section_spec.tables):
            check_table(rows, table_spec)
