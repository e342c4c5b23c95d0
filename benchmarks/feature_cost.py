"""Cost of the feature groups: seconds per MTS epoch with all groups against the loss alone.

    python benchmarks/feature_cost.py             # mnist1d_shift, pool batch 512, 15 timed epochs each
    python benchmarks/feature_cost.py --quick     # 3 timed epochs, for a smoke check

Both trainers train one untimed epoch first, then timed epochs alternate between them and the
median per variant is taken, with GSNR measurement off so that only training and features are timed. The one-off preparation
(the warm-up classifier and the position columns, before training) is reported apart. One torch
thread, as in a sweep trial.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import append_result, markdown_table  # noqa: E402
from mts.features import FEATURE_GROUPS  # noqa: E402
from mts.tasks import build_task  # noqa: E402
from sweep.config import load_run_config  # noqa: E402

if TYPE_CHECKING:
    from mts import Trainer

logger = logging.getLogger(__name__)

ALL_GROUPS = ",".join(FEATURE_GROUPS)
VARIANTS = [("loss", "[loss]"), ("all groups", f"[{ALL_GROUPS}]")]


def build_trainers(common: list[str]) -> dict[str, tuple[Trainer, float]]:
    """Build one trainer per variant and return it with its construction (preparation) seconds."""
    from mts import Trainer

    trainers = {}
    for name, features in VARIANTS:
        config = load_run_config([f"mts.features={features}", *common])
        task = build_task(config.task)
        started = time.perf_counter()
        trainers[name] = (Trainer(config, task=task), time.perf_counter() - started)
    return trainers


def time_epochs(trainers: dict[str, tuple[Trainer, float]], timed_epochs: int) -> dict[str, float]:
    """Return the median epoch seconds per variant; epochs alternate between variants, so that a
    change in the load of a shared machine affects both alike."""
    for trainer, _ in trainers.values():
        trainer.run_epoch()
    seconds: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(timed_epochs):
        for name, (trainer, _) in trainers.items():
            started = time.perf_counter()
            trainer.run_epoch()
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist1d_shift")
    parser.add_argument("--batch", type=int, default=512, help="pool batch size")
    parser.add_argument("--quick", action="store_true", help="3 timed epochs per variant instead of 15")
    parser.add_argument("--no-write", action="store_true", help="print the table without appending it")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    timed_epochs = 3 if args.quick else 15
    common = [
        "method=mts", f"task={args.task}", f"pool.batch_size={args.batch}", "train.threads=1",
        "gsnr.enabled=false", f"train.epochs={timed_epochs + 1}",
    ]
    trainers = build_trainers(common)
    epoch_seconds = time_epochs(trainers, timed_epochs)
    base = epoch_seconds["loss"]
    rows = [
        [name, round(seconds, 3), f"{(seconds / base - 1) * 100:+.1f}%", round(trainers[name][1], 2)]
        for name, seconds in epoch_seconds.items()
    ]
    table = markdown_table(["features", "seconds per epoch (median)", "vs loss", "preparation seconds"], rows)
    logger.warning("\n%s", table)
    if not args.no_write:
        append_result(
            f"Feature cost per MTS epoch on {args.task}, pool batch {args.batch}",
            table,
            notes=f"All groups: {ALL_GROUPS}. Median of {timed_epochs} epochs per variant, alternating, after one untimed epoch, GSNR off, "
            "one torch thread. Preparation (trainer construction: task from cache, warm-up classifier unless "
            "cached, position columns) is paid once per run.",
        )


if __name__ == "__main__":
    main()
