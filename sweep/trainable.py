"""The Ray Tune trainable: one MTS trial, reported and checkpointed every epoch.

The trial's config is the flat dict the searcher drew (`{"pool.batch_size": 64, ...}`), applied on
the sweep's base run config. Every epoch the trial reports the trainer's `EpochReport` (accuracy,
gain over the uniform baseline, GSNR, noise scale, weight statistics, throughput) and saves the
trainer's full state as a Tune checkpoint, so a retried trial continues from its last epoch.

A trial whose loss becomes NaN or infinite sends a last report with `diverged=True` and returns
normally. Because it does not raise, Tune does not retry it, and the sweep goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from mts import DivergenceError, EpochReport, Reference, RunConfig, Trainer
from sweep.baselines import baseline_key
from sweep.errors import SweepError
from sweep.launch_config import OBJECTIVES, apply_params, baseline_config
from sweep.search_space import to_plain

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "trainer.pt"


class TrialRunner(Protocol):
    """Interface of the trainer the trainable drives: epoch reports, plus saving and restoring its state."""

    def __iter__(self) -> Any: ...

    def save(self, path: str | os.PathLike[str]) -> None: ...

    def load(self, path: str | os.PathLike[str]) -> None: ...


TrainerFactory = Callable[[RunConfig, Reference], TrialRunner]


def default_trainer(config: RunConfig, reference: Reference) -> TrialRunner:
    return Trainer(config, reference=reference)


@dataclasses.dataclass
class TrialContext:
    """Data shared by every trial of a sweep, passed once through Ray's object store."""

    base: dict[str, Any]  # the sweep's base run config as a plain dict
    baseline_batch_size: int  # pool batch of the uniform baselines
    references: dict[str, dict[str, float]]  # baseline key -> {"val_acc", "test_acc"}
    threads: int  # torch threads per trial, from sweep.cpus_per_trial
    trainer_factory: Optional[TrainerFactory] = None  # None: `mts.Trainer`; tests pass small fakes


def trial_config(context: TrialContext, params: dict[str, Any]) -> RunConfig:
    """Return the run config of a trial: the base with the drawn params and the trial's threads."""
    config = apply_params(context.base, to_plain(params))
    config.train.threads = context.threads
    return config


def trial_reference(context: TrialContext, params: dict[str, Any]) -> Reference:
    """Return the uniform baseline a trial with `params` is measured against."""
    key = baseline_key(baseline_config(context.base, to_plain(params), context.baseline_batch_size))
    stored = context.references.get(key)
    if stored is None:
        raise SweepError(f"no uniform baseline for the trial params {params}; the launcher trains one per task and seed before the trials")
    return Reference(val_acc=stored["val_acc"], test_acc=stored["test_acc"])


def train_trial(params: dict[str, Any], context: TrialContext) -> None:
    """Train one trial to the end, reporting and checkpointing every epoch (a Tune function trainable)."""
    from ray import tune

    started_at = time.time()
    # Ray logs one INFO line per saved checkpoint, that is one per epoch of every trial.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    config = trial_config(context, params)
    runner = (context.trainer_factory or default_trainer)(config, trial_reference(context, params))
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            runner.load(Path(folder) / CHECKPOINT_FILE)
        logger.info("Trial resumed from its checkpoint at epoch %s", getattr(runner, "epoch", "?"))

    last: dict[str, Any] | None = None
    try:
        for report in runner:
            last = epoch_metrics(report, config.train.epochs, started_at)
            _report_with_checkpoint(runner, last)
    except DivergenceError as err:
        logger.warning("Trial diverged at epoch %d, step %d: %s", err.epoch, err.step, err)
        tune.report(diverged_metrics(last, err, config.train.epochs, started_at))


def epoch_metrics(report: EpochReport, epochs: int, started_at: float) -> dict[str, Any]:
    """Return the Tune result of one epoch: the report plus the trial's bookkeeping fields."""
    metrics = report.to_dict()
    metrics.update(
        epochs=epochs,  # an ended trial with epoch < epochs was stopped early by the scheduler
        status="finished" if report.epoch >= epochs else "running",
        diverged=False,
        trial_started_at=started_at,  # wall clock when this attempt started, for concurrency checks
        reported_at=time.time(),
        pid=os.getpid(),
    )
    return metrics


def diverged_metrics(last: dict[str, Any] | None, err: DivergenceError, epochs: int, started_at: float) -> dict[str, Any]:
    """Return the final result of a diverged trial: the last epoch's metrics (NaN if none) and the error."""
    metrics: dict[str, Any] = dict(last) if last else {name: math.nan for name in OBJECTIVES}
    metrics.update(
        epoch=err.epoch,
        epochs=epochs,
        status="diverged",
        diverged=True,
        divergence_step=err.step,
        error=str(err),
        trial_started_at=started_at,
        reported_at=time.time(),
        pid=os.getpid(),
    )
    return metrics


def _report_with_checkpoint(runner: TrialRunner, metrics: dict[str, Any]) -> None:
    from ray import tune

    with tempfile.TemporaryDirectory(prefix="mtsweep-trial-") as folder:
        runner.save(Path(folder) / CHECKPOINT_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

