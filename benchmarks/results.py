"""Append a benchmark table to benchmarks/RESULTS.md with the command, date, CPUs and versions.

Set the environment variable `MTSWEEP_BENCHMARK_RESULTS` to a file path to make `append_result`
write there instead of benchmarks/RESULTS.md (the tests do this, so that a `--quick` run never
changes the recorded results). The file is created with the same header when it does not exist.
An explicit `path` argument wins over both.
"""

from __future__ import annotations

import logging
import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Optional

logger = logging.getLogger(__name__)

RESULTS_PATH = Path(__file__).with_name("RESULTS.md")
# Environment variable naming the file that receives the sections instead of RESULTS_PATH.
RESULTS_ENV = "MTSWEEP_BENCHMARK_RESULTS"
VERSIONED_PACKAGES = ("torch", "numpy", "ray", "optuna", "mnist1d", "scikit-learn")


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """Render rows as a Markdown table; floats get four significant digits."""
    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def environment_line() -> str:
    versions = []
    for package in VERSIONED_PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return f"{os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}, " + ", ".join(versions)


def results_path() -> Path:
    """Return the file that receives new sections: `$MTSWEEP_BENCHMARK_RESULTS` if set, else RESULTS.md."""
    override = os.environ.get(RESULTS_ENV, "").strip()
    return Path(override).expanduser() if override else RESULTS_PATH


def append_result(title: str, table: str, notes: str = "", path: Optional[Path] = None) -> None:
    """Append one section: title, command, date, machine, table and notes.

    Without `path`, the section goes to `results_path()`. A run with `--quick` gets a note that its
    figures cannot be compared with the goals.
    """
    path = path if path is not None else results_path()
    if "--quick" in sys.argv[1:]:
        quick_note = "Quick run (`--quick`): a smoke check too short to compare with the goals."
        notes = f"{quick_note} {notes}" if notes else quick_note
    command = "python " + " ".join(shlex.quote(arg) for arg in [os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    section = [
        f"## {title}",
        "",
        f"Command: `{command}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  ",
        f"Machine: {environment_line()}",
        "",
        table,
        "",
    ]
    if notes:
        section += [notes, ""]
    if not path.exists():
        path.write_text("# Benchmark results\n\nEach section is appended by the script named in its command.\n\n")
    with path.open("a") as handle:
        handle.write("\n".join(section) + "\n")
    logger.info("Appended %r to %s", title, path)
