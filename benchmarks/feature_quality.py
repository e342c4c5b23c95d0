"""Selection quality of the feature groups: MTS with all groups against MW-Net and uniform.

    python benchmarks/feature_quality.py                      # both bundled tasks, seeds 0-2
    python benchmarks/feature_quality.py --quick              # 5 epochs, seed 0, for a smoke check
    python benchmarks/feature_quality.py --skip-per-group     # only the method comparison
    python benchmarks/feature_quality.py --skip-methods --groups source class   # two groups alone

For each task and seed it runs `uniform` (the default schedule of `mtsweep run`), `mwnet` (loss
only, pool batch 100) and `mts` with every feature group at pool batch 512, then `mts` with each
group alone (`--groups` picks them) to show which groups carry the signal. It appends three tables to
benchmarks/RESULTS.md: mean test accuracy and weight AUC per method, the mean weight of each pool
source under `mts` with all groups (where the ranking agrees with the tags and where it does not),
and weight AUC per group. Each finished run is also written as one JSON line to
`--log` so a long run that is stopped keeps its results.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import append_result, markdown_table  # noqa: E402
from mts.features import FEATURE_GROUPS  # noqa: E402
from mts.tasks import Task, build_task  # noqa: E402
from sweep.config import load_run_config  # noqa: E402

logger = logging.getLogger(__name__)

ALL_GROUPS = ",".join(FEATURE_GROUPS)
METHOD_RUNS = [
    ("uniform", ["method=uniform"]),
    ("mwnet @100", ["method=mwnet", "pool.batch_size=100"]),
    ("mts all groups @512", ["method=mts", "pool.batch_size=512", f"mts.features=[{ALL_GROUPS}]"]),
]
# Weight AUC is averaged over the reports of the last epochs, because one epoch's weights are noisy.
AUC_EPOCHS = 5


def run_one(overrides: list[str], task: str, seed: int, epochs: int | None) -> dict[str, float]:
    from mts import Trainer

    common = [f"task={task}", f"seed={seed}", f"task.seed={seed}", "train.threads=1"]
    if epochs is not None:
        common.append(f"train.epochs={epochs}")
    config = load_run_config([*common, *overrides])
    task_data = build_task(config.task)
    started = time.perf_counter()
    trainer = Trainer(config, task=task_data)
    reports, late_weights = [], []
    for report in trainer:
        reports.append(report)
        if report.epoch > config.train.epochs - AUC_EPOCHS:
            late_weights.append(trainer.epoch_weights.clone())
    seconds = time.perf_counter() - started
    aucs = [report.weight_auc for report in reports[-AUC_EPOCHS:] if not math.isnan(report.weight_auc)]
    return {
        "test_acc": reports[-1].best_test_acc,
        "weight_auc": statistics.mean(aucs) if aucs else math.nan,
        "seconds": seconds,
        **source_weights(task_data, torch.stack(late_weights)),
    }


def source_weights(task_data: Task, late_weights: torch.Tensor) -> dict[str, float]:
    """Return the mean raw weight of each pool source over the last epochs, keyed `w:<source>`."""
    mean_weight = torch.nanmean(late_weights.double(), dim=0).numpy()
    result = {}
    for code, name in enumerate(task_data.sources):
        members = (task_data.pool.source == code) & ~np.isnan(mean_weight)
        if members.any():
            result[f"w:{name}"] = float(mean_weight[members].mean())
    return result


def run_all(runs: list[tuple[str, list[str]]], tasks: list[str], seeds: list[int], epochs: int | None, log: Path) -> dict:
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for task in tasks:
        for seed in seeds:
            for name, overrides in runs:
                result = run_one(overrides, task, seed, epochs)
                results.setdefault((task, name), []).append(result)
                with log.open("a") as handle:
                    handle.write(json.dumps({"task": task, "seed": seed, "run": name, **result}) + "\n")
                logger.warning("%s seed %d %s: %s", task, seed, name, result)
    return results


def mean_of(values: list[dict[str, float]], key: str) -> float:
    finite = [value[key] for value in values if key in value and not math.isnan(value[key])]
    return statistics.mean(finite) if finite else math.nan


def method_table(results: dict, tasks: list[str]) -> str:
    rows = []
    for task in tasks:
        uniform = mean_of(results[(task, "uniform")], "test_acc")
        for name, _ in METHOD_RUNS:
            values = results[(task, name)]
            test = mean_of(values, "test_acc")
            spread = statistics.stdev([v["test_acc"] for v in values]) if len(values) > 1 else math.nan
            rows.append([task, name, len(values), test, spread, round((test - uniform) * 100, 2),
                         mean_of(values, "weight_auc"), round(mean_of(values, "seconds"), 1)])
    return markdown_table(["task", "method", "seeds", "test acc (mean)", "test acc (std)", "gain vs uniform (pts)",
                           f"weight AUC (mean of last {AUC_EPOCHS} epochs)", "seconds per run"], rows)


def source_table(results: dict, tasks: list[str], run: str) -> str:
    """Mean raw weight per pool source for one run, beside each source's quality tag.

    The hidden tags are read here, for evaluation only, to label each source.
    """
    rows = []
    for task in tasks:
        task_data = build_task(load_run_config([f"task={task}"]).task)
        for code, name in enumerate(task_data.sources):
            members = task_data.pool.source == code
            if not members.any():
                continue
            tag = "faithful" if task_data.quality[members].mean() > 0.5 else "harmful"
            rows.append([task, name, tag, int(members.sum()), mean_of(results[(task, run)], f"w:{name}")])
    return markdown_table(["task", "source", "tag", "pool samples", f"mean raw weight, {run}"], rows)


def group_table(results: dict, tasks: list[str], groups: list[str]) -> str:
    rows = []
    for group in groups:
        row: list[object] = [group]
        for task in tasks:
            values = results[(task, group)]
            row += [mean_of(values, "weight_auc"), mean_of(values, "test_acc")]
        rows.append(row)
    header = ["group alone"] + [f"{task} {column}" for task in tasks for column in ("weight AUC", "test acc")]
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["mnist1d_shift", "digits_synth"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="5 epochs and seed 0 only")
    parser.add_argument("--skip-per-group", action="store_true", help="only the method comparison")
    parser.add_argument("--skip-methods", action="store_true", help="only the per-group table")
    parser.add_argument("--groups", nargs="+", default=list(FEATURE_GROUPS), help="groups of the per-group table")
    parser.add_argument("--log", type=Path, default=Path("feature_quality.jsonl"), help="JSON lines of finished runs")
    parser.add_argument("--no-write", action="store_true", help="print the tables without appending them")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    epochs = 5 if args.quick else None
    seeds = [0] if args.quick else args.seeds
    tables = []
    if not args.skip_methods:
        results = run_all(METHOD_RUNS, args.tasks, seeds, epochs, args.log)
        tables.append(method_table(results, args.tasks))
        tables.append(source_table(results, args.tasks, METHOD_RUNS[-1][0]))
    if not args.skip_per_group:
        group_runs = [(group, ["method=mts", "pool.batch_size=512", f"mts.features=[{group}]"]) for group in args.groups]
        results = run_all(group_runs, args.tasks, seeds, epochs, args.log)
        tables.append(group_table(results, args.tasks, args.groups))
    for table in tables:
        logger.warning("\n%s", table)
    if not args.no_write:
        notes = (f"Seeds {seeds}; test accuracy of the checkpoint with the best validation accuracy; weight AUC of the raw "
                 f"weights for faithful against harmful pool samples, mean over the last {AUC_EPOCHS} epochs' reports. "
                 f"All groups: {ALL_GROUPS}. Defaults of `mtsweep run` otherwise (uniform at its default pool batch).")
        append_result("Feature groups: MTS against MW-Net and uniform", "\n\n".join(tables), notes=notes)


if __name__ == "__main__":
    main()
