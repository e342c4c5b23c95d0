"""The MTS trainer: one training run of one method, as an iterator of per-epoch reports.

    trainer = Trainer(RunConfig(method="mts"))
    for report in trainer:
        print(report.epoch, report.val_acc, report.gsnr)

The trainer never talks to Ray or a database. A sweep wraps it, turns each report into a Tune
report and checkpoints with `save`/`load`, which restore model, meta-network, optimizers, the
random generator and the epoch, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from mts.bilevel import MetaBatch
from mts.config import RunConfig
from mts.errors import ConfigError, DivergenceError
from mts.evaluation import weight_auc
from mts.features import FeatureBatch
from mts.gsnr import gsnr_from_samples, noise_scale
from mts.methods import Method, StepInput, build_method
from mts.models import build_model
from mts.reports import EpochReport, Reference
from mts.tasks.base import Split, Task
from mts.validation import config_problems, task_problems
from mts.weights import WeightStats

logger = logging.getLogger(__name__)

STATE_VERSION = 1


class SplitTensors:
    """One split as tensors."""

    def __init__(self, split: Split) -> None:
        self.x = torch.as_tensor(split.x, dtype=torch.float32)
        self.y = torch.as_tensor(split.y, dtype=torch.long)
        self.source = torch.as_tensor(split.source, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.y.shape[0])


class Trainer:
    """Train one method on one task and yield an `EpochReport` after every epoch."""

    def __init__(self, config: RunConfig, task: Task | None = None, reference: Reference | None = None) -> None:
        problems = config_problems(config)
        if problems:
            raise ConfigError("\n".join(problems))
        if task is None:
            from mts.tasks import build_task

            task = build_task(config.task)
        if config.train.threads > 0:
            torch.set_num_threads(config.train.threads)

        self.config = config
        self.task = task
        self.reference = reference
        self.pool = SplitTensors(task.pool)
        self.meta = SplitTensors(task.meta)
        self.val = SplitTensors(task.val)
        self.test = SplitTensors(task.test)

        # Initialization draws from a forked global generator, so building a trainer neither depends
        # on nor disturbs the caller's random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.model = build_model(config.model, task.input_dim, task.num_classes)
            self.method: Method = build_method(config, task, self.model)
        self.trainable = torch.as_tensor(self.method.pool_indices(task), dtype=torch.long)
        problems = task_problems(config, task, len(self.trainable))
        if problems:
            raise ConfigError("\n".join(problems))
        # After validation, because offline feature groups may train a warm-up classifier here.
        self.method.prepare(task)

        self.optimizer = _build_optimizer(config, self.model)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.epoch = 0
        self.steps = 0
        self.elapsed = 0.0
        self.best_epoch = 0
        self.best_val_acc = -1.0
        self.best_test_acc = float("nan")
        self.best_model_state = copy.deepcopy(self.model.state_dict())
        # Raw weight of every pool sample in the last epoch, NaN where a sample was not trained on.
        # It shows what a method keeps. Like the AUC, it reads no quality tag.
        self.epoch_weights = torch.full((len(self.pool),), float("nan"))
        self.last_gsnr = {
            "gsnr": math.nan, "gsnr_pooled": math.nan, "gsnr_per_sample": math.nan, "noise_scale": math.nan, "gsnr_epoch": 0,
        }

    # Iteration ---------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[EpochReport]:
        while self.epoch < self.config.train.epochs:
            yield self.run_epoch()

    def run_epoch(self) -> EpochReport:
        """Train one epoch, measure, and return its report."""
        started = time.perf_counter()
        stats = WeightStats()
        epoch_weights = torch.full((len(self.pool),), float("nan"))
        loss_sum, meta_losses, seen = 0.0, [], 0

        self.model.train()
        for index in self._epoch_batches():
            loss, weights = self._train_step(index)
            stats.update(weights.raw, weights.p, weights.floor_hit)
            epoch_weights[index] = weights.raw.detach().float()
            if weights.meta_loss is not None:
                meta_losses.append(weights.meta_loss)
            loss_sum += loss * len(index)
            seen += len(index)
        self.epoch += 1
        self.epoch_weights = epoch_weights

        if self.method.learns_weights and self._gsnr_due():
            self._measure_gsnr()
        report = self._report(stats, epoch_weights, loss_sum / seen, meta_losses, seen, started)
        logger.debug("epoch %d: %s", self.epoch, report)
        return report

    def _epoch_batches(self) -> list[torch.Tensor]:
        """Cut a fresh permutation of the trainable pool into batches of exactly pool.batch_size.

        The last incomplete batch is dropped: its normalized weights would average fewer samples
        and so carry a noisier meta-gradient. Reshuffling every epoch trains on the dropped samples
        in other epochs.
        """
        size = self.config.pool.batch_size
        order = self.trainable[torch.randperm(len(self.trainable), generator=self.generator)]
        count = len(order) // size
        return list(order[: count * size].split(size))

    def _train_step(self, index: torch.Tensor) -> tuple[float, Any]:
        # The same operations as model(x), split so that feature groups can read the penultimate layer.
        hidden = self.model.features(self.pool.x[index])
        logits = self.model.head(hidden)
        losses = F.cross_entropy(logits, self.pool.y[index], reduction="none")
        step = StepInput(
            batch=self._feature_batch(index, logits.detach(), losses.detach(), hidden.detach()),
            losses=losses,
            epoch=self.epoch,
            step=self.steps,
            draw_meta=self._draw_meta,
            draw_pool=self._draw_pool,
        )
        weights = self.method.weights(step)
        self.method.observe(step.batch)
        loss = (weights.p.detach() * losses).sum()
        if not torch.isfinite(loss):
            raise DivergenceError(
                f"training loss became {float(loss.detach())} at epoch {self.epoch + 1}, step {self.steps + 1}; "
                "lower train.lr or mts.lr",
                epoch=self.epoch + 1,
                step=self.steps + 1,
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        return float(loss.detach()), weights

    def _feature_batch(
        self, index: torch.Tensor, logits: torch.Tensor, losses: torch.Tensor, hidden: torch.Tensor
    ) -> FeatureBatch:
        return FeatureBatch(
            index=index, x=self.pool.x[index], y=self.pool.y[index], source=self.pool.source[index],
            logits=logits, losses=losses, embeddings=hidden,
        )

    def _draw_meta(self) -> MetaBatch:
        size = min(self.config.mts.meta_batch_size, len(self.meta))
        index = torch.randperm(len(self.meta), generator=self.generator)[:size]
        return MetaBatch(x=self.meta.x[index], y=self.meta.y[index])

    def _draw_pool(self, size: int | None = None) -> FeatureBatch:
        """Draw a random pool batch and compute its forward pass at the current parameters."""
        size = min(size or self.config.pool.batch_size, len(self.trainable))
        index = self.trainable[torch.randperm(len(self.trainable), generator=self.generator)[:size]]
        with torch.no_grad():
            hidden = self.model.features(self.pool.x[index])
            logits = self.model.head(hidden)
        losses = F.cross_entropy(logits, self.pool.y[index], reduction="none")
        return self._feature_batch(index, logits, losses, hidden)

    # GSNR --------------------------------------------------------------------------------------

    def _gsnr_due(self) -> bool:
        if not self.config.gsnr.enabled:
            return False
        return self.epoch % self.config.gsnr.every_epochs == 0 or self.epoch == self.config.train.epochs

    def _measure_gsnr(self) -> None:
        """Measure the meta-gradient GSNR at the current parameters, which stay frozen meanwhile.

        K independent (pool batch, meta batch) pairs give K batch meta-gradients; one pool batch
        gives the per-sample meta-gradients. BatchNorm runs in eval mode so that measuring does not
        change the running statistics.
        """
        gsnr = self.config.gsnr
        metanet_state = copy.deepcopy(self.method.state_dict())
        self.model.eval()
        draws = torch.stack(
            [self.method.meta_gradient_sample(self._draw_pool(), self._draw_meta()) for _ in range(gsnr.draws)]
        )
        per_sample = self.method.per_sample_meta_gradients(self._draw_pool(gsnr.per_sample_batch), self._draw_meta())
        self.model.train()
        self.method.load_state_dict(metanet_state)

        batch_summary = gsnr_from_samples(draws)
        self.last_gsnr = {
            "gsnr": batch_summary.median,
            "gsnr_pooled": batch_summary.pooled,
            "gsnr_per_sample": gsnr_from_samples(per_sample).median,
            "noise_scale": noise_scale(batch_summary, self.config.pool.batch_size),
            "gsnr_epoch": self.epoch,
        }

    # Evaluation and reports --------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, split: SplitTensors) -> tuple[float, float]:
        """Return (accuracy, mean loss) of the current model on a split."""
        self.model.eval()
        correct, loss_sum = 0, 0.0
        for start in range(0, len(split), self.config.train.eval_batch_size):
            x = split.x[start : start + self.config.train.eval_batch_size]
            y = split.y[start : start + self.config.train.eval_batch_size]
            logits = self.model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
        self.model.train()
        return correct / len(split), loss_sum / len(split)

    def _report(
        self,
        stats: WeightStats,
        epoch_weights: torch.Tensor,
        train_loss: float,
        meta_losses: list[float],
        seen: int,
        started: float,
    ) -> EpochReport:
        val_acc, val_loss = self.evaluate(self.val)
        test_acc, _ = self.evaluate(self.test)
        if val_acc > self.best_val_acc:
            self.best_epoch, self.best_val_acc, self.best_test_acc = self.epoch, val_acc, test_acc
            self.best_model_state = copy.deepcopy(self.model.state_dict())

        seconds = time.perf_counter() - started
        self.elapsed += seconds
        report = EpochReport(
            epoch=self.epoch,
            steps=self.steps,
            train_loss=train_loss,
            val_acc=val_acc,
            val_loss=val_loss,
            test_acc=test_acc,
            best_epoch=self.best_epoch,
            best_val_acc=self.best_val_acc,
            best_test_acc=self.best_test_acc,
            meta_loss=float(np.mean(meta_losses)) if meta_losses else math.nan,
            **self.last_gsnr,
            **stats.summary(),
            weight_auc=self._weight_auc(epoch_weights),
            samples_per_sec=seen / seconds if seconds > 0 else math.nan,
            wall_time=self.elapsed,
        )
        if self.reference is not None:
            report.val_gain = val_acc - self.reference.val_acc
            report.test_gain = self.best_test_acc - self.reference.test_acc
        return report

    def _weight_auc(self, epoch_weights: torch.Tensor) -> float:
        if self.task.quality is None:
            return math.nan
        visited = ~torch.isnan(epoch_weights)
        return weight_auc(epoch_weights[visited].numpy(), self.task.quality[visited.numpy()])

    # State -------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Return everything needed to continue this run exactly where it is."""
        return {
            "version": STATE_VERSION,
            "method": self.config.method,
            "epoch": self.epoch,
            "steps": self.steps,
            "elapsed": self.elapsed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "method_state": self.method.state_dict(),
            "generator": self.generator.get_state(),
            "best": {"epoch": self.best_epoch, "val_acc": self.best_val_acc, "test_acc": self.best_test_acc},
            "best_model": self.best_model_state,
            "last_gsnr": dict(self.last_gsnr),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"checkpoint state version {state.get('version')!r} is not supported; expected {STATE_VERSION}")
        if state["method"] != self.config.method:
            raise ConfigError(
                f"checkpoint was written by method={state['method']!r} but the config says method={self.config.method!r}; "
                "resume with the checkpoint's method or start a new run"
            )
        self.epoch, self.steps, self.elapsed = state["epoch"], state["steps"], state["elapsed"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method_state"])
        self.generator.set_state(state["generator"])
        best = state["best"]
        self.best_epoch, self.best_val_acc, self.best_test_acc = best["epoch"], best["val_acc"], best["test_acc"]
        self.best_model_state = state["best_model"]
        self.last_gsnr = dict(state["last_gsnr"])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state to `path` atomically: a temporary file, then a rename."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(handle)
        try:
            torch.save(self.state_dict(), temporary)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Restore the state written by `save`."""
        self.load_state_dict(torch.load(path, weights_only=True))

    def best_model(self) -> torch.nn.Module:
        """Return a copy of the classifier with the best validation accuracy so far."""
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.best_model_state)
        return model


def _build_optimizer(config: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    train = config.train
    if train.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
