"""The Ray Tune trainable: one MTS trial, reported and checkpointed every epoch.

The trial's config is the flat dict the searcher drew (`{"pool.batch_size": 64, ...}`), applied on
the sweep's base run config. Every epoch the trial reports the trainer's `EpochReport` (accuracy,
gain over the uniform baseline, GSNR, noise scale, weight statistics, throughput). It saves the
trainer's full state as a Tune checkpoint after its first epoch, then whenever `checkpoint_every_s`
seconds have passed since the last one, and after its last epoch, so a retried trial continues from
its last checkpoint and a resumed sweep does not rerun a finished trial.

The trainer runs in a thread of its own and hands each epoch to the thread that reports to Tune.
That is because `tune.report` in a function trainable blocks until the driver has processed the
result (callbacks, searcher, checkpoint registration) and asked for the next one. On a busy 2-CPU
machine that round trip took about 60 ms per epoch, time in which a trainer in the same thread
would wait instead of training.

A trial whose loss becomes NaN or infinite sends a last report with `diverged=True` and returns
normally. Because it does not raise, Tune does not retry it, and the sweep goes on. A trial whose
config or task is invalid (`ConfigError`, `TaskError`) does the same with `errored=True` and the
error message, because a retry would fail the same way.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import math
import os
import queue
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from mts import ConfigError, DivergenceError, EpochReport, Reference, RunConfig, TaskError, Trainer
from sweep.baselines import baseline_key
from sweep.errors import SweepError
from sweep.launch_config import OBJECTIVES, apply_params, baseline_config
from sweep.search_space import to_plain

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "trainer.pt"
# Seconds of training between two checkpoints of a trial (the first and last epoch always get one).
# Each checkpoint costs the trial a copy into the experiment folder and a second round trip to the
# driver, and the driver a save of Tune's experiment state, so checkpointing every short epoch adds up.
CHECKPOINT_EVERY_S = 10.0
# Epochs the trainer may run ahead of the reports Tune has taken; a stopped trial wastes at most these.
EPOCHS_AHEAD = 2
# Errors that a retry of the same trial would raise again: they end the trial without a retry.
INPUT_ERRORS = (ConfigError, TaskError)
# Seconds a worker process that exits waits for a running trainer thread to finish its epoch.
EXIT_WAIT_S = 60.0


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
    checkpoint_every_s: float = CHECKPOINT_EVERY_S  # seconds between checkpoints; 0 checkpoints every epoch


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
    """Train one trial to the end, reporting every epoch and checkpointing (a Tune function trainable)."""
    from ray import tune

    started_at = time.time()
    # Ray logs one INFO line per saved checkpoint.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    last: dict[str, Any] | None = None
    epochs = 0
    try:
        config = trial_config(context, params)
        epochs = config.train.epochs
        runner = (context.trainer_factory or default_trainer)(config, trial_reference(context, params))
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                runner.load(Path(folder) / CHECKPOINT_FILE)
            logger.info("Trial resumed from its checkpoint at epoch %s", getattr(runner, "epoch", "?"))

        with BackgroundTraining(runner, epochs, started_at, context.checkpoint_every_s) as training:
            for metrics, folder in training.epochs():
                last = metrics
                _report(metrics, folder)
            if training.divergence is not None:
                err = training.divergence
                logger.warning("Trial diverged at epoch %d, step %d: %s", err.epoch, err.step, err)
                tune.report(diverged_metrics(last, err, epochs, started_at))
    except INPUT_ERRORS as err:
        logger.error("Trial with params %s has an invalid config or task, not retried: %s", params, err)
        tune.report(errored_metrics(last, err, epochs, started_at))


class BackgroundTraining:
    """Run a trainer in a thread of its own and hand each epoch's metrics (and checkpoint) over.

    `epochs()` yields `(metrics, checkpoint folder or None)` in order. A `DivergenceError` ends the
    epochs and is kept in `divergence`. Any other error of the trainer is raised from `epochs()`,
    so that Tune retries the trial. Leaving the `with` block (also when Tune stops the trial from
    inside `tune.report`) stops the trainer after its current epoch and waits for it, so that a
    reused actor never runs two trainers at once.
    """

    def __init__(self, runner: TrialRunner, epochs: int, started_at: float, checkpoint_every_s: float) -> None:
        self.runner = runner
        self.total_epochs = epochs
        self.started_at = started_at
        self.checkpoint_every_s = checkpoint_every_s
        self.divergence: Optional[DivergenceError] = None
        self._queue: queue.Queue[tuple[str, Any, Optional[str]]] = queue.Queue(maxsize=EPOCHS_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._train, name="mtsweep-trainer", daemon=True)

    def __enter__(self) -> "BackgroundTraining":
        _RUNNING.add(self)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop(timeout=None)
        _RUNNING.discard(self)
        self._discard_queued()

    def stop(self, timeout: Optional[float]) -> None:
        """Ask the trainer to stop after its current epoch and wait for it, at most `timeout` seconds."""
        self._stop.set()
        self._thread.join(timeout)

    def epochs(self) -> Any:
        """Yield each epoch's metrics and checkpoint folder until the trainer ends."""
        while True:
            kind, payload, folder = self._queue.get()
            if kind == "epoch":
                yield payload, folder
            elif kind == "diverged":
                self.divergence = payload
                return
            elif kind == "error":
                raise payload
            else:
                return

    def _train(self) -> None:
        """Train every epoch, snapshot the due checkpoints and queue the results (the trainer thread)."""
        last_checkpoint_at: Optional[float] = None
        try:
            for report in self.runner:
                metrics = epoch_metrics(report, self.total_epochs, self.started_at)
                folder = None
                if self._checkpoint_due(report.epoch, last_checkpoint_at):
                    folder = self._snapshot()
                    last_checkpoint_at = time.monotonic()
                if not self._put(("epoch", metrics, folder)):
                    return
        except DivergenceError as err:
            self._put(("diverged", err, None))
            return
        except BaseException as err:  # noqa: BLE001 - handed to the reporting thread, which raises it for Tune
            self._put(("error", err, None))
            return
        self._put(("done", None, None))

    def _checkpoint_due(self, epoch: int, last_checkpoint_at: Optional[float]) -> bool:
        """Checkpoint the first epoch of an attempt, the last epoch, and then every `checkpoint_every_s`."""
        if last_checkpoint_at is None or epoch >= self.total_epochs:
            return True
        return time.monotonic() - last_checkpoint_at >= self.checkpoint_every_s

    def _snapshot(self) -> str:
        """Save the trainer's state now, before it trains on, into a new temporary folder."""
        folder = tempfile.mkdtemp(prefix="mtsweep-trial-")
        self.runner.save(Path(folder) / CHECKPOINT_FILE)
        return folder

    def _put(self, item: tuple[str, Any, Optional[str]]) -> bool:
        """Queue `item` unless the trial is being stopped; return whether it was queued."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        if item[2] is not None:
            shutil.rmtree(item[2], ignore_errors=True)
        return False

    def _discard_queued(self) -> None:
        """Remove the checkpoint folders of epochs that were never reported (a stopped trial)."""
        while True:
            try:
                _, _, folder = self._queue.get_nowait()
            except queue.Empty:
                return
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


# Trainings in progress in this process, stopped at exit: a trainer thread still inside torch's
# backward pass when the interpreter finalizes aborts the worker with a long stack trace.
# NOTE: an epoch that runs longer than EXIT_WAIT_S after the stop request still ends that way.
_RUNNING: set[BackgroundTraining] = set()


@atexit.register
def _stop_running_trainings() -> None:
    """Stop every trainer thread of this process after its current epoch, before the interpreter finalizes."""
    for training in list(_RUNNING):
        training.stop(timeout=EXIT_WAIT_S)


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


def errored_metrics(last: dict[str, Any] | None, err: Exception, epochs: int, started_at: float) -> dict[str, Any]:
    """Return the final result of a trial ended by an invalid config or task: the last metrics and the error."""
    metrics: dict[str, Any] = dict(last) if last else {name: math.nan for name in OBJECTIVES}
    metrics.update(
        epoch=metrics.get("epoch", 0),
        epochs=epochs,
        status="errored",
        errored=True,
        error="; ".join(str(err).splitlines()),  # one line for the trial table and the store
        trial_started_at=started_at,
        reported_at=time.time(),
        pid=os.getpid(),
    )
    return metrics


def _report(metrics: dict[str, Any], folder: Optional[str]) -> None:
    """Report one epoch to Tune, with the checkpoint in `folder` if there is one, then remove the folder."""
    from ray import tune

    if folder is None:
        tune.report(metrics)
        return
    try:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
