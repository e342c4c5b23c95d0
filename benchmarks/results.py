"""Append a benchmark table to benchmarks/RESULTS.md with the command, date, CPUs and versions."""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path

RESULTS_PATH = Path(__file__).with_name("RESULTS.md")
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


def append_result(title: str, table: str, notes: str = "", path: Path = RESULTS_PATH) -> None:
    """Append one section: title, command, date, machine, table and notes."""
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
