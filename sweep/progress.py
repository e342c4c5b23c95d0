"""The live trial table that `mtsweep launch` prints while a sweep runs.

A Tune callback on the driver keeps the latest result of every trial and prints a table of all
trials at most every `interval_s` seconds, and once more when the sweep ends. It writes to the
current `sys.stdout` at print time instead of holding a stream, because Ray Tune pickles its
callbacks with the experiment so that `mtsweep resume` can restore them.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

from ray.tune import Callback

logger = logging.getLogger(__name__)


def trial_status(tune_status: str, last_result: dict[str, Any] | None) -> str:
    """Return a trial's sweep status from its Tune status and last result."""
    if tune_status == "ERROR":
        return "errored"
    if tune_status != "TERMINATED":
        return tune_status.lower()
    result = last_result or {}
    if "epoch" not in result:
        return "stopped"  # ended before its first report, e.g. by Ctrl-C
    if result.get("diverged"):
        return "diverged"
    if result.get("errored"):
        return "errored"
    epoch, epochs = result.get("epoch"), result.get("epochs")
    if epoch is not None and epochs is not None and epoch < epochs:
        return "pruned"
    return "finished"


class TrialTable(Callback):
    """Print a table of every trial's status, params and latest metrics."""

    def __init__(self, params: list[str], metric: str, interval_s: float) -> None:
        self.params = params
        self.metric = metric
        self.interval_s = interval_s
        self._last_print = 0.0
        # Trials started and ended by this driver. A trial started here that Tune marks TERMINATED
        # without ending it was stopped by Ctrl-C, not pruned. Trials that an earlier driver ended
        # are in neither set.
        self._started: set[str] = set()
        self._ended: set[str] = set()

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._started.add(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._ended.add(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._ended.add(trial.trial_id)

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if time.monotonic() - self._last_print >= self.interval_s:
            self.print_table(trials)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self.print_table(trials, final=True)

    def print_table(self, trials: list[Any], final: bool = False) -> None:
        self._last_print = time.monotonic()
        if trials:
            stopped = self._started - self._ended
            interrupted = {trial.trial_id for trial in trials if trial.status == "TERMINATED" and trial.trial_id in stopped} if final else set()
            print(format_table(trials, self.params, self.metric, interrupted), file=sys.stdout, flush=True)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_last_print"] = 0.0
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        # A driver that restores this callback starts with no trial of its own.
        self._started, self._ended = set(), set()


def format_table(trials: list[Any], params: list[str], metric: str, interrupted: set[str] = frozenset()) -> str:
    """Return the trial table as aligned text, with a count of trials per status above it.

    `interrupted` names the trials that were running when the sweep was stopped.
    """
    header = ["trial", "status", *params, "epoch", metric, "gsnr"]
    rows = []
    counts: dict[str, int] = {}
    for trial in trials:
        result = trial.last_result or {}
        status = "interrupted" if trial.trial_id in interrupted else trial_status(trial.status, result)
        counts[status] = counts.get(status, 0) + 1
        epoch = f"{result.get('epoch', '-')}/{result.get('epochs', '-')}" if result else "-"
        rows.append([trial.trial_id, status, *(_cell(trial.config.get(p)) for p in params), epoch, _cell(result.get(metric)), _cell(result.get("gsnr"))])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [", ".join(f"{count} {status}" for status, count in sorted(counts.items()))]
    for row in [header, *rows]:
        lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)
