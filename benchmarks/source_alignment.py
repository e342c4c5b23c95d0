"""What the one-step meta-gradient rewards: alignment of each pool sample with the meta loss.

    python benchmarks/source_alignment.py            # both bundled tasks, seeds 0-1, uniform, oracle and mts
    python benchmarks/source_alignment.py --quick    # mnist1d_shift, 5 epochs, seed 0, for a smoke check

The meta-gradient of MTS raises the weight of pool sample i when its alignment
`a_i = <grad L_meta, grad l_i>` is above the weighted batch mean, because the weights are
normalized per batch. A meta-network learns `a_i` averaged over samples whose features look alike:
per source for the `source` group alone, nearly per sample with many online columns. This script
trains a classifier with `uniform`, `oracle` and `mts` (all feature groups, pool batch 512), and at
chosen epochs computes `a_i` for a fixed random probe of pool samples with `torch.func.vmap`. For each epoch it reports:

- `sample AUC`: the AUC of `a_i` for faithful against harmful samples of the probe;
- `source AUC`: the same when each sample's `a_i` is replaced by its source's mean, which is what
  a meta-network that reads only the `source` group could learn at best;
- per source, the mean `a_i` relative to the probe's mean, in units of the probe's mean `|a_i|`:
  positive means that the one-step meta-gradient raises that source's weight.

The hidden quality tags are read here for evaluation only, to compute the AUCs.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import append_result, markdown_table  # noqa: E402
from mts.evaluation import weight_auc  # noqa: E402
from mts.features import FEATURE_GROUPS  # noqa: E402
from mts.functional import eval_mode  # noqa: E402
from mts.tasks import build_task  # noqa: E402
from sweep.config import load_run_config  # noqa: E402

logger = logging.getLogger(__name__)

ALL_GROUPS = ",".join(FEATURE_GROUPS)
METHOD_RUNS = [
    ("uniform", ["method=uniform"]),
    ("oracle", ["method=oracle"]),
    ("mts all groups @512", ["method=mts", "pool.batch_size=512", f"mts.features=[{ALL_GROUPS}]"]),
]
PROBE_SIZE = 1500  # pool samples whose alignment is computed at each probed epoch
CHUNK = 250  # probe samples per vmap call; bounds memory at CHUNK x parameter count


def alignments(model: torch.nn.Module, meta_x: torch.Tensor, meta_y: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Return `<grad L_meta, grad l_i>` for every row of `x`, at the model's parameters, in eval mode."""
    params = {name: value.detach() for name, value in model.named_parameters()}
    buffers = {name: value.detach() for name, value in model.named_buffers()}

    def loss(p: dict[str, torch.Tensor], inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, (p, buffers), (inputs,)), labels)

    def sample_loss(p: dict[str, torch.Tensor], inputs: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return loss(p, inputs[None], label[None])

    with eval_mode(model):
        meta_grad = grad(loss)(params, meta_x, meta_y)
        per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
        result = []
        for start in range(0, len(x), CHUNK):
            grads = per_sample(params, x[start : start + CHUNK], y[start : start + CHUNK])
            dot = sum((grads[name].flatten(1) * meta_grad[name].flatten()).sum(1) for name in params)
            result.append(dot)
    return torch.cat(result).numpy().astype(np.float64)


def probe_run(task_name: str, seed: int, overrides: list[str], epochs: int | None, probe_epochs: list[int]) -> list[dict]:
    """Train one run and return one row of alignment figures per probed epoch."""
    from mts import Trainer

    common = [f"task={task_name}", f"seed={seed}", f"task.seed={seed}", "train.threads=1", "gsnr.enabled=false"]
    if epochs is not None:
        common.append(f"train.epochs={epochs}")
    config = load_run_config([*common, *overrides])
    task = build_task(config.task)
    trainer = Trainer(config, task=task)
    probe = np.random.default_rng(seed).choice(len(task.pool), size=min(PROBE_SIZE, len(task.pool)), replace=False)
    quality, source = task.quality[probe], task.pool.source[probe]
    probe_x, probe_y = trainer.pool.x[probe], trainer.pool.y[probe]
    rows = []
    for report in trainer:
        if report.epoch not in probe_epochs:
            continue
        a = alignments(trainer.model, trainer.meta.x, trainer.meta.y, probe_x, probe_y)
        scale = float(np.abs(a).mean()) or 1.0
        source_mean = np.zeros_like(a)
        relative = {}
        for code, name in enumerate(task.sources):
            members = source == code
            if members.any():
                source_mean[members] = a[members].mean()
                relative[name] = (float(a[members].mean()) - float(a.mean())) / scale
        rows.append({
            "epoch": report.epoch,
            "val_acc": report.val_acc,
            "sample_auc": weight_auc(a, quality),
            "source_auc": weight_auc(source_mean, quality),
            **{f"rel:{name}": value for name, value in relative.items()},
        })
        logger.warning("%s seed %d %s epoch %d: %s", task_name, seed, overrides[0], report.epoch, rows[-1])
    return rows


def task_table(task_name: str, runs: dict[str, list[list[dict]]], sources: tuple[str, ...], tags: dict[str, str]) -> str:
    """One row per method and probed epoch, each figure the mean over seeds."""
    header = ["method", "epoch", "val acc", "sample AUC", "source AUC"] + [f"{name} ({tags[name]})" for name in sources]
    rows = []
    for method, per_seed in runs.items():
        for position, first in enumerate(per_seed[0]):
            seeds = [rows_of_seed[position] for rows_of_seed in per_seed]
            row: list[object] = [method, first["epoch"]]
            for key in ["val_acc", "sample_auc", "source_auc"] + [f"rel:{name}" for name in sources]:
                values = [seed_row[key] for seed_row in seeds if key in seed_row]
                row.append(statistics.mean(values) if values else float("nan"))
            rows.append(row)
    return f"**{task_name}**\n\n" + markdown_table(header, rows)


def source_tags(task_name: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """Return the task's sources that occur in the pool and each one's tag, for labels only."""
    task = build_task(load_run_config([f"task={task_name}"]).task)
    names, tags = [], {}
    for code, name in enumerate(task.sources):
        members = task.pool.source == code
        if members.any():
            names.append(name)
            tags[name] = "faithful" if task.quality[members].mean() > 0.5 else "harmful"
    return tuple(names), tags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["mnist1d_shift", "digits_synth"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", nargs="+", type=int, default=[1, 5, 10, 20, 40, 60], help="epochs to probe")
    parser.add_argument("--quick", action="store_true", help="mnist1d_shift, 5 epochs, seed 0, uniform and mts")
    parser.add_argument("--no-write", action="store_true", help="print the tables without appending them")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    tasks, seeds, probe_epochs, epochs, methods = args.tasks, args.seeds, args.epochs, None, METHOD_RUNS
    if args.quick:
        tasks, seeds, probe_epochs, epochs = ["mnist1d_shift"], [0], [1, 5], 5
        methods = [METHOD_RUNS[0], METHOD_RUNS[2]]
    tables = []
    for task_name in tasks:
        sources, tags = source_tags(task_name)
        runs = {name: [probe_run(task_name, seed, overrides, epochs, probe_epochs) for seed in seeds] for name, overrides in methods}
        tables.append(task_table(task_name, runs, sources, tags))
    for table in tables:
        logger.warning("\n%s", table)
    if not args.no_write:
        notes = (f"Seeds {seeds}, mean over seeds. Probe: {PROBE_SIZE} random pool samples per run; the meta gradient over the "
                 "whole meta set; both in eval mode at the parameters after the epoch. Source columns: mean alignment of the "
                 "source minus the probe's mean, in units of the probe's mean |alignment|; the tag in brackets is the hidden "
                 "quality tag, read for evaluation only.")
        append_result("One-step alignment with the meta loss, per pool source", "\n\n".join(tables), notes=notes)


if __name__ == "__main__":
    main()
