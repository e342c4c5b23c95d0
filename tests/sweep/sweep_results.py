"""Readers of what a finished sweep left on disk, shared by the sweep tests."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import optuna


def count_rows(experiment: Path, query: str) -> int:
    """Return the count that `query` selects from a running sweep's database, read-only.

    A read-only connection cannot race the driver creating the schema; before the tables exist the
    count is 0.
    """
    database = experiment / "sweep.db"
    if not database.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as connection:
            return connection.execute(query).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def read_results(experiment: Path) -> dict[str, list[dict[str, Any]]]:
    """Return every Tune trial's results (one dict per report) from its result.json, by trial id."""
    results = {}
    for folder in sorted((experiment / "tune").glob("trial_*")):
        lines = (folder / "result.json").read_text().splitlines() if (folder / "result.json").exists() else []
        results[folder.name.removeprefix("trial_")] = [json.loads(line) for line in lines if line.strip()]
    return results


def load_study(experiment: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{experiment / 'sweep.db'}")


def peak_concurrency(intervals: list[tuple[float, float]]) -> int:
    """Return the maximum number of intervals that overlap at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak
