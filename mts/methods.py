"""Training-data selection methods: how each pool batch is weighted.

Every method sees the same batches and the same classifier optimizer; only the normalized weights
`p` of `sum_i p_i l_i` differ. `uniform` is the no-selection reference that gains are measured
against, `oracle` trains on the pool samples tagged faithful, `l2rw` weights each batch by its
alignment with the meta gradient, and `mwnet` and `mts` learn a meta-network by the bi-level step
(`mwnet` reads the loss only).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from mts.bilevel import BilevelStep, MetaBatch, PoolBatch, l2rw_weights
from mts.config import RunConfig
from mts.errors import ConfigError
from mts.features import FeatureBatch, FeatureContext, Featurizer
from mts.functional import flatten
from mts.metanet import MetaNetwork
from mts.tasks.base import Task

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class StepInput:
    """One training step's pool batch, its forward pass and ways to draw more data."""

    batch: FeatureBatch  # losses and logits detached
    losses: torch.Tensor  # (N,) with the graph to the classifier parameters
    epoch: int
    step: int
    draw_meta: Callable[[], MetaBatch]
    draw_pool: Callable[[], FeatureBatch]  # a fresh pool batch, for a separate meta-gradient batch


@dataclasses.dataclass
class StepWeights:
    """The weights of one batch: raw (for statistics and AUC) and normalized (detached)."""

    raw: torch.Tensor
    p: torch.Tensor
    floor_hit: bool = False
    meta_loss: float | None = None


class Method:
    """Base class: uniform weights, no meta-network."""

    name: ClassVar[str] = "uniform"
    learns_weights: ClassVar[bool] = False  # True when the method has a meta-gradient to measure

    def __init__(self, config: RunConfig, task: Task, model: nn.Module) -> None:
        self.config = config
        self.model = model

    @staticmethod
    def pool_indices(task: Task) -> np.ndarray:
        """Return the pool positions this method may train on."""
        return np.arange(len(task.pool))

    def prepare(self, task: Task) -> None:
        """Do the per-task work needed before training (offline features); most methods need none."""
        del task

    def observe(self, batch: FeatureBatch) -> None:
        """See a training step's forward pass, after its weights are chosen (tracked features)."""
        del batch

    def weights(self, step: StepInput) -> StepWeights:
        count = step.losses.shape[0]
        raw = torch.ones(count)
        return StepWeights(raw=raw, p=raw / count)

    def meta_gradient_sample(self, batch: FeatureBatch, meta: MetaBatch) -> torch.Tensor | None:
        """Return one flat meta-gradient at the current parameters, or None without a meta-network."""
        return None

    def per_sample_meta_gradients(self, batch: FeatureBatch, meta: MetaBatch) -> torch.Tensor | None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


class UniformMethod(Method):
    """No selection: every pool sample weighs 1/N."""

    name = "uniform"


class OracleMethod(Method):
    """Uniform weights on the pool samples tagged faithful: an upper reference on bundled tasks."""

    name = "oracle"

    @staticmethod
    def pool_indices(task: Task) -> np.ndarray:
        if task.quality is None:
            raise ConfigError(
                f"method=oracle needs quality tags, but task {task.name!r} has none; "
                "use a bundled task or a file with a `quality` column"
            )
        return np.flatnonzero(task.quality == 1)


class L2RWMethod(Method):
    """Learning to Reweight: per-batch weights from the clipped alignment with the meta gradient."""

    name = "l2rw"

    def weights(self, step: StepInput) -> StepWeights:
        meta = step.draw_meta()
        raw = l2rw_weights(self.model, step.batch.x, step.batch.y, meta, self.config.mts.virtual_lr).detach()
        return StepWeights(raw=raw, p=raw)


class MTSMethod(Method):
    """A meta-network over the selected feature groups, trained by the bi-level step."""

    name = "mts"
    learns_weights = True

    def __init__(self, config: RunConfig, task: Task, model: nn.Module) -> None:
        super().__init__(config, task, model)
        self.featurizer = Featurizer(self.feature_names(config))
        self.metanet = MetaNetwork(
            feature_dim=self.featurizer.width,
            num_classes=task.num_classes,
            num_sources=len(task.sources),
            hidden=list(config.mts.hidden),
            embedding_dim=config.mts.embedding_dim,
            use_class=self.featurizer.use_class,
            use_source=self.featurizer.use_source,
            init_bias=config.mts.init_bias,
        )
        self.bilevel = BilevelStep(model, self.metanet, config.mts)
        self.meta_optimizer = torch.optim.AdamW(
            self.metanet.parameters(), lr=config.mts.lr, weight_decay=config.mts.weight_decay
        )

    @staticmethod
    def feature_names(config: RunConfig) -> list[str]:
        return list(config.mts.features)

    def prepare(self, task: Task) -> None:
        # The context carries no quality tags, so no feature group can read them.
        self.featurizer.prepare(FeatureContext.from_task(task, self.config))

    def observe(self, batch: FeatureBatch) -> None:
        self.featurizer.observe(batch)

    def weights(self, step: StepInput) -> StepWeights:
        count = step.losses.shape[0]
        if step.epoch < self.config.mts.warmup_epochs:
            raw = torch.ones(count)
            return StepWeights(raw=raw, p=raw / count)

        update = step.step % self.config.mts.interval == 0
        meta = step.draw_meta() if update or self.featurizer.needs_meta_embeddings else None
        # Features depend on the batch, the meta embeddings and the tracked buffers, none of which the
        # meta update changes, so one computation serves the meta-gradient and the weights.
        batch = self.pool_batch(step.batch, meta)
        meta_loss = self._update_meta_network(step, batch, meta) if update else None
        with torch.no_grad():
            raw, p, floor_hit = self.bilevel.normalized_weights(batch)
        return StepWeights(raw=raw, p=p, floor_hit=floor_hit, meta_loss=meta_loss)

    def _update_meta_network(self, step: StepInput, batch: PoolBatch, meta: MetaBatch) -> float:
        if self.config.mts.separate_batch:
            grads, meta_loss = self.bilevel.meta_gradient(self.pool_batch(step.draw_pool(), meta), meta)
        else:
            grads, meta_loss = self.bilevel.meta_gradient(batch, meta, losses=step.losses)
        for parameter, gradient in zip(self.metanet.parameters(), grads):
            parameter.grad = gradient.detach()
        self.meta_optimizer.step()
        self.meta_optimizer.zero_grad(set_to_none=True)
        return meta_loss

    def pool_batch(self, batch: FeatureBatch, meta: MetaBatch | None = None) -> PoolBatch:
        """Attach the meta-network features to a pool batch; `meta` is needed by online_position."""
        if self.featurizer.needs_meta_embeddings:
            if meta is None:
                raise ValueError(f"feature groups {self.featurizer.names} need a meta batch, but none was given")
            batch = dataclasses.replace(batch, meta_embeddings=self._embed(meta.x))
        return PoolBatch(
            index=batch.index,
            x=batch.x,
            y=batch.y,
            source=batch.source,
            features=self.featurizer.compute(batch).detach(),
        )

    @torch.no_grad()
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Return the classifier's penultimate layer for `x`, in eval mode so BatchNorm statistics stay put."""
        was_training = self.model.training
        self.model.eval()
        embeddings = self.model.features(x)
        self.model.train(was_training)
        return embeddings

    def meta_gradient_sample(self, batch: FeatureBatch, meta: MetaBatch) -> torch.Tensor:
        grads, _ = self.bilevel.meta_gradient(self.pool_batch(batch, meta), meta)
        return flatten(grads).detach()

    def per_sample_meta_gradients(self, batch: FeatureBatch, meta: MetaBatch) -> torch.Tensor:
        return self.bilevel.per_sample_meta_gradients(self.pool_batch(batch, meta), meta).detach()

    def state_dict(self) -> dict[str, Any]:
        return {
            "metanet": self.metanet.state_dict(),
            "meta_optimizer": self.meta_optimizer.state_dict(),
            "features": self.featurizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.metanet.load_state_dict(state["metanet"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        self.featurizer.load_state_dict(state.get("features", {}))


class MWNetMethod(MTSMethod):
    """Meta-Weight-Net (Shu et al., 2019): the meta-network reads the per-sample loss only."""

    name = "mwnet"

    @staticmethod
    def feature_names(config: RunConfig) -> list[str]:
        if list(config.mts.features) != ["loss"]:
            logger.info("method=mwnet reads the loss only; mts.features=%s is ignored", list(config.mts.features))
        return ["loss"]


METHODS: dict[str, type[Method]] = {
    method.name: method for method in (UniformMethod, OracleMethod, L2RWMethod, MWNetMethod, MTSMethod)
}


def build_method(config: RunConfig, task: Task, model: nn.Module) -> Method:
    """Build the method named by `config.method`."""
    try:
        method = METHODS[config.method]
    except KeyError:
        raise ConfigError(
            f"method={config.method!r} is not a known method; allowed: {', '.join(METHODS)}"
        ) from None
    return method(config, task, model)
