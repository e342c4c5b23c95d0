"""Stand-ins for `mts.Trainer` that the sweep tests hand to `run_sweep(trainer_factory=...)`.

`FaultyTrainer` wraps the real trainer and injects a failure: an exception after every first epoch
of an attempt, or NaN parameters so that the real trainer's own check raises `DivergenceError`.
`FaultFactory` can also raise `ConfigError` instead of building a trainer, as an invalid config does.
`ScriptedRunner` trains nothing: it yields reports whose validation accuracy is a function of the
trial's meta learning rate, which makes the ASHA decisions predictable and the trials fast.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from mts import ConfigError, EpochReport, Reference, RunConfig, Trainer


class FaultyTrainer:
    """The real trainer, plus an injected failure chosen by the run seed."""

    def __init__(self, config: RunConfig, reference: Reference, log_path: str, fault: str) -> None:
        self.trainer = Trainer(config, reference=reference)
        self.log_path = log_path
        self.fault = fault  # "raise", "nan" or "none" ("config" never gets here: FaultFactory raises it)

    @property
    def epoch(self) -> int:
        return self.trainer.epoch

    def save(self, path: str | os.PathLike[str]) -> None:
        self.trainer.save(path)

    def load(self, path: str | os.PathLike[str]) -> None:
        self.trainer.load(path)

    def __iter__(self) -> Iterator[EpochReport]:
        with open(self.log_path, "a") as log:
            log.write(json.dumps({"seed": self.trainer.config.seed, "start_epoch": self.trainer.epoch}) + "\n")
        started_at = self.trainer.epoch
        for report in self.trainer:
            yield report
            if self.fault == "raise" and report.epoch > started_at:
                raise RuntimeError(f"injected failure after epoch {report.epoch}")
            if self.fault == "nan" and report.epoch == 1:
                with torch.no_grad():
                    for parameter in self.trainer.model.parameters():
                        parameter.fill_(math.nan)


class FaultFactory:
    """Build a `FaultyTrainer` whose fault depends on the trial's seed."""

    def __init__(self, log_path: str, faults: dict[int, str]) -> None:
        self.log_path = log_path
        self.faults = faults

    def __call__(self, config: RunConfig, reference: Reference) -> FaultyTrainer:
        fault = self.faults.get(config.seed, "none")
        if fault == "config":
            with open(self.log_path, "a") as log:
                log.write(json.dumps({"seed": config.seed, "start_epoch": None}) + "\n")
            raise ConfigError(f"seed={config.seed} is an injected invalid value; allowed: any other seed")
        return FaultyTrainer(config, reference, self.log_path, fault)


class ScriptedRunner:
    """Yield one report per epoch with val_acc = 0.5 + mts.lr * epoch; no training."""

    def __init__(self, config: RunConfig, reference: Reference, log_path: str | None, epoch_seconds: float) -> None:
        self.config = config
        self.reference = reference
        self.epoch = 0
        self.epoch_seconds = epoch_seconds
        if log_path is not None:
            with open(log_path, "a") as log:
                log.write(json.dumps({"config": _config_record(config)}) + "\n")

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps({"epoch": self.epoch}))

    def load(self, path: str | os.PathLike[str]) -> None:
        self.epoch = json.loads(Path(path).read_text())["epoch"]

    def __iter__(self) -> Iterator[EpochReport]:
        while self.epoch < self.config.train.epochs:
            time.sleep(self.epoch_seconds)
            self.epoch += 1
            yield self._report()

    def _report(self) -> EpochReport:
        val_acc = 0.5 + self.config.mts.lr * self.epoch
        return EpochReport(
            epoch=self.epoch, steps=self.epoch, train_loss=1.0, val_acc=val_acc, val_loss=1.0, test_acc=val_acc,
            best_epoch=self.epoch, best_val_acc=val_acc, best_test_acc=val_acc, meta_loss=1.0, gsnr=1.0,
            gsnr_pooled=1.0, gsnr_per_sample=1.0, noise_scale=1.0, w_mean=0.5, p_max=0.1, b_eff=10.0,
            floor_hits=0.0, weight_auc=math.nan, samples_per_sec=1.0, wall_time=float(self.epoch),
            val_gain=val_acc - self.reference.val_acc, test_gain=val_acc - self.reference.test_acc,
        )


class ScriptedFactory:
    def __init__(self, log_path: str | None = None, epoch_seconds: float = 0.0) -> None:
        self.log_path = log_path
        self.epoch_seconds = epoch_seconds

    def __call__(self, config: RunConfig, reference: Reference) -> ScriptedRunner:
        return ScriptedRunner(config, reference, self.log_path, self.epoch_seconds)


def _config_record(config: RunConfig) -> dict[str, Any]:
    """The searched values as the trainer received them, with their Python types."""
    return {
        "pool.batch_size": [config.pool.batch_size, type(config.pool.batch_size).__name__],
        "mts.features": [list(config.mts.features), type(config.mts.features).__name__],
        "seed": [config.seed, type(config.seed).__name__],
    }
