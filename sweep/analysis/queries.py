"""Queries on the analysis store: the best configurations of an experiment, filtered and grouped.

    result = best_configurations(store, "smoke", metric="val_gain", top=3, where=["seed=0"], per="pool.batch_size")
    print(format_best(result))

Trials are ranked by a validation metric only. `val_gain` and `val_acc` rank by the trial's best
epoch, and the test accuracy shown beside them is the one of that same epoch. Any other metric
ranks by its value at the trial's last epoch. Test metrics are rejected as a ranking metric, because
the test split is reported and never used to select.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Iterable, Optional

from sweep.analysis.errors import AnalysisError
from sweep.analysis.store import AnalysisStore, ExperimentRecord

# Metrics where lower is better; every other metric is maximized.
MINIMIZED = frozenset({"wall_time", "val_loss", "train_loss", "meta_loss"})
# Metrics ranked by the trial's best epoch; the others by their last reported value.
BEST_EPOCH_METRICS = {"val_gain": "best_val_gain", "val_acc": "best_val_acc"}
# Trial statuses left out of a ranking unless a `--where status=...` filter names a status.
EXCLUDED_BY_DEFAULT = ("errored", "diverged")
# Trial fields `--where` and `--per` accept besides the params.
TRIAL_FIELDS = ("status", "node", "trial_id")


@dataclasses.dataclass
class BestResult:
    """The ranked rows of a `best` query and how they were chosen."""

    experiment: str
    metric: str
    mode: str
    per: Optional[str]
    params: list[str]  # searched params shown as columns
    rows: list[dict[str, Any]]
    considered: int  # trials that passed the filters and had a value of the metric
    matched: int = 0  # trials that passed the --where filters
    recorded: int = 0  # trials of the experiment in the store
    where: list[str] = dataclasses.field(default_factory=list)  # the --where filters as given

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_metric(metric: str) -> None:
    """Raise `AnalysisError` when `metric` is a test metric."""
    if "test" in metric:
        raise AnalysisError(f"--metric {metric} is a test metric; the test split is reported, never used to rank; use val_gain or val_acc")


def load_experiment(store: AnalysisStore, name: str) -> ExperimentRecord:
    """Return the experiment `name`, or raise `AnalysisError` when the store does not hold it."""
    record = store.experiment(name)
    if record is None:
        raise AnalysisError(f"no analysis data for experiment {name!r} in {store.url}; the store is filled while a sweep runs")
    return record


# Values and filters ----------------------------------------------------------------------------


def canonical(value: Any) -> str:
    """Return the text form used to compare and group values: lists as `a,b`, numbers without noise."""
    if isinstance(value, (list, tuple)):
        return ",".join(canonical(item) for item in value)
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() else repr(value)
    return str(value)


def values_equal(actual: Any, wanted: str) -> bool:
    """Return whether a stored value equals the text of a `--where` value, numbers compared as numbers."""
    if canonical(actual) == wanted:
        return True
    try:
        parsed = json.loads(wanted)
    except ValueError:
        parsed = wanted
    if canonical(actual) == canonical(parsed):
        return True
    try:
        return math.isclose(float(actual), float(wanted), rel_tol=1e-9)
    except (TypeError, ValueError):
        return False


def parse_where(items: Iterable[str]) -> list[tuple[str, str]]:
    """Parse `key=value` filters; raise `AnalysisError` on one without `=`."""
    filters = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AnalysisError(f"--where {item!r} is not key=value; e.g. --where pool.batch_size=64 or --where mts.features=loss,class")
        filters.append((key.strip(), value.strip()))
    return filters


def field(trial: dict[str, Any], key: str) -> Any:
    """Return a trial's value of a param or of a trial field (status, node, trial_id)."""
    if key in TRIAL_FIELDS:
        return trial.get(key)
    return trial["params"].get(key)


def known_keys(trials: list[dict[str, Any]]) -> set[str]:
    keys = set(TRIAL_FIELDS)
    for trial in trials:
        keys.update(trial["params"])
    return keys


def check_keys(keys: Iterable[str], trials: list[dict[str, Any]], option: str) -> None:
    known = known_keys(trials)
    for key in keys:
        if trials and key not in known:
            raise AnalysisError(f"{option} {key!r} is not a parameter of this experiment; known keys: {', '.join(sorted(known))}")


def filter_trials(trials: list[dict[str, Any]], where: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Keep trials matching every filter; errored and diverged ones only when a filter names a status."""
    if not any(key == "status" for key, _ in where):
        trials = [trial for trial in trials if trial["status"] not in EXCLUDED_BY_DEFAULT]
    return [trial for trial in trials if all(values_equal(field(trial, key), value) for key, value in where)]


# Ranking ---------------------------------------------------------------------------------------


def metric_value(trial: dict[str, Any], metric: str) -> tuple[Optional[float], Optional[int]]:
    """Return the value a trial is ranked by and the epoch it comes from."""
    if metric in BEST_EPOCH_METRICS:
        return trial.get(BEST_EPOCH_METRICS[metric]), trial.get("best_epoch")
    return trial["last_metrics"].get(metric), trial.get("last_epoch")


def ranked(trials: list[dict[str, Any]], metric: str, mode: str) -> list[tuple[float, int | None, dict[str, Any]]]:
    """Return (value, epoch, trial) for trials with a value, best first; ties keep the earlier trial."""
    scored = []
    for trial in trials:
        value, epoch = metric_value(trial, metric)
        if value is not None and math.isfinite(value):
            scored.append((value, epoch, trial))
    return sorted(scored, key=lambda item: -item[0] if mode == "max" else item[0])


def result_row(rank: int, value: float, epoch: int | None, trial: dict[str, Any], metric: str, params: list[str]) -> dict[str, Any]:
    """Return one output row; accuracies and gains come from the ranked epoch."""
    at_best = metric in BEST_EPOCH_METRICS
    prefix = "best_" if at_best else "last_"
    return {
        "rank": rank,
        "trial_id": trial["trial_id"],
        "status": trial["status"],
        "params": {name: trial["params"].get(name) for name in params},
        "metric": metric,
        "value": value,
        "epoch": epoch,
        "val_gain": trial.get(f"{prefix}val_gain"),
        "val_acc": trial.get(f"{prefix}val_acc"),
        "test_acc": trial.get(f"{prefix}test_acc"),
        "test_gain": trial.get(f"{prefix}test_gain"),
        # GSNR is measured on a cadence, so the best epoch often has none: this is the trial's latest.
        "last_gsnr": trial.get("last_gsnr"),
    }


def best_configurations(
    store: AnalysisStore,
    experiment: str,
    metric: str = "val_gain",
    top: Optional[int] = None,
    where: Iterable[str] = (),
    per: Optional[str] = None,
) -> BestResult:
    """Return the best trials of an experiment by a validation metric, overall or per value of `per`.

    `top` defaults to 5 overall and to 1 per group.
    """
    check_metric(metric)
    if top is not None and top < 1:
        raise AnalysisError(f"--top {top} must be at least 1")
    record = load_experiment(store, experiment)
    trials = store.trial_summaries(record.id, with_last_metrics=metric not in BEST_EPOCH_METRICS)
    filters = parse_where(where)
    check_keys([key for key, _ in filters] + ([per] if per else []), trials, "--where/--per key")
    chosen = filter_trials(trials, filters)
    mode = "min" if metric in MINIMIZED else "max"
    scored = ranked(chosen, metric, mode)
    if chosen and not scored:
        raise AnalysisError(f"no trial reported --metric {metric}; metrics reported: {', '.join(_reported_metrics(chosen))}")
    params = list(record.searched_params) or _varying_params(trials)
    rows = _rows(scored, metric, params, per, top)
    return BestResult(
        experiment=experiment, metric=metric, mode=mode, per=per, params=params, rows=rows, considered=len(scored),
        matched=len(chosen), recorded=len(trials), where=list(where),
    )


def _rows(scored: list[tuple[float, int | None, dict[str, Any]]], metric: str, params: list[str], per: Optional[str], top: Optional[int]) -> list[dict[str, Any]]:
    if per is None:
        return [result_row(rank, value, epoch, trial, metric, params) for rank, (value, epoch, trial) in enumerate(scored[: top or 5], 1)]
    groups: dict[str, list[tuple[float, int | None, dict[str, Any]]]] = {}
    for item in scored:
        groups.setdefault(canonical(field(item[2], per)), []).append(item)
    rows = []
    for group in sorted(groups, key=_group_order):
        for rank, (value, epoch, trial) in enumerate(groups[group][: top or 1], 1):
            rows.append({"group": group, **result_row(rank, value, epoch, trial, metric, params)})
    return rows


def _group_order(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _varying_params(trials: list[dict[str, Any]]) -> list[str]:
    """Return the param keys whose value differs between trials (when the searched keys are unknown)."""
    values: dict[str, set[str]] = {}
    for trial in trials:
        for key, value in trial["params"].items():
            values.setdefault(key, set()).add(canonical(value))
    return sorted(key for key, seen in values.items() if len(seen) > 1)


def _reported_metrics(trials: list[dict[str, Any]]) -> list[str]:
    names: set[str] = set(BEST_EPOCH_METRICS)
    for trial in trials:
        names.update(trial.get("last_metrics", {}))
    return sorted(name for name in names if "test" not in name)


# Output ----------------------------------------------------------------------------------------


def _empty_reason(result: BestResult) -> str:
    """Say why a `best` query has no rows: nothing recorded, nothing matched, or no value yet."""
    if result.recorded == 0:
        return "no trial is recorded yet"
    if result.matched == 0 and result.where:
        return f"no trial matches --where {' '.join(result.where)} ({result.recorded} trials recorded)"
    return f"no trial has a value of {result.metric} yet"


def format_best(result: BestResult) -> str:
    """Return the result as an aligned text table with a one-line header."""
    scope = f"best per {result.per}" if result.per else "best"
    lines = [f"{result.experiment}: {scope} by {result.metric} ({result.mode}), {result.considered} trials ranked; test columns are reported, never ranked"]
    if not result.rows:
        return "\n".join(lines + [_empty_reason(result)])
    header = (["group"] if result.per else []) + ["rank", "trial", "status", *result.params]
    header += ([result.metric] if result.metric not in ("val_gain", "val_acc") else []) + ["epoch", "val_gain", "val_acc", "test_acc", "test_gain", "last_gsnr"]
    table = [header]
    for row in result.rows:
        cells = ([row["group"]] if result.per else []) + [row["rank"], row["trial_id"], row["status"]]
        cells += [row["params"].get(name) for name in result.params]
        cells += ([row["value"]] if result.metric not in ("val_gain", "val_acc") else [])
        cells += [row["epoch"], row["val_gain"], row["val_acc"], row["test_acc"], row["test_gain"], row["last_gsnr"]]
        table.append([_cell(cell) for cell in cells])
    widths = [max(len(line[index]) for line in table) for index in range(len(header))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return canonical(value)
    return str(value)
