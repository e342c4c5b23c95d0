"""The warm-up classifier behind the offline feature groups, computed once and cached on disk.

A classifier of the run's architecture is trained on the whole pool without selection for
`mts.feature_warmup_epochs` epochs. Its penultimate layer is one representation the `position`
group can use, and its training gives the data-pruning scores of the `pruning_scores` group:
forgetting counts over the warm-up epochs, and EL2N and last-layer GraNd at its end.

The result depends only on the task, the model config, the warm-up epochs, the learning rate and
the seed, so it is cached on disk by `mts.features.cache` under those values.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch
import torch.nn.functional as F

from mts.features.base import FeatureContext
from mts.features.cache import cached_arrays

logger = logging.getLogger(__name__)

# Fixed, so that the offline features do not change with the swept `pool.batch_size`.
WARMUP_BATCH_SIZE = 128


@dataclasses.dataclass
class WarmupOutputs:
    """Outputs of the warm-up classifier, one row per pool (or meta) sample."""

    pool_embeddings: np.ndarray  # (n_pool, h) penultimate layer at the end of warm-up
    meta_embeddings: np.ndarray  # (n_meta, h)
    el2n: np.ndarray  # (n_pool,) |softmax - one_hot| at the end of warm-up
    grand: np.ndarray  # (n_pool,) norm of the loss gradient with respect to the last layer
    forgetting: np.ndarray  # (n_pool,) right-to-wrong transitions between warm-up epochs


def warmup_outputs(context: FeatureContext) -> WarmupOutputs:
    """Return the warm-up outputs of `context`: from memory, from the disk cache, or by training."""
    if "warmup" not in context.shared:
        config = context.config
        settings = {"epochs": config.mts.feature_warmup_epochs, "lr": config.train.lr, "batch_size": WARMUP_BATCH_SIZE}
        arrays = cached_arrays(context, "warmup", settings, lambda: dataclasses.asdict(train_warmup(context)))
        context.shared["warmup"] = WarmupOutputs(**arrays)
    return context.shared["warmup"]


def train_warmup(context: FeatureContext) -> WarmupOutputs:
    """Train the warm-up classifier on the unweighted pool and collect its outputs."""
    from mts.models import build_model

    config = context.config
    started = time.perf_counter()
    x = torch.as_tensor(context.pool.x, dtype=torch.float32)
    y = torch.as_tensor(context.pool.y, dtype=torch.long)
    # A forked, seeded generator: the warm-up neither depends on nor disturbs the caller's state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(config.model, x.shape[1], context.num_classes)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)

    correct_history = []
    for _ in range(config.mts.feature_warmup_epochs):
        model.train()
        for index in torch.randperm(len(y), generator=generator).split(WARMUP_BATCH_SIZE):
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        correct_history.append(_predictions(model, x).argmax(dim=1) == y)

    outputs = _collect(model, context, x, y, torch.stack(correct_history))
    logger.info(
        "Trained the warm-up classifier for offline features: %d epochs on %d pool samples in %.1f s",
        config.mts.feature_warmup_epochs, len(y), time.perf_counter() - started,
    )
    return outputs


def forgetting_events(correct_history: torch.Tensor) -> torch.Tensor:
    """Count right-to-wrong transitions along dim 0 of an (epochs, n) boolean history."""
    forgotten = correct_history[:-1] & ~correct_history[1:]
    return forgotten.sum(dim=0)


@torch.no_grad()
def _predictions(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return model(x)


@torch.no_grad()
def _collect(
    model: torch.nn.Module, context: FeatureContext, x: torch.Tensor, y: torch.Tensor, correct_history: torch.Tensor
) -> WarmupOutputs:
    model.eval()
    hidden = model.features(x)
    probs = F.softmax(model.head(hidden), dim=1)
    residual = probs - F.one_hot(y, num_classes=context.num_classes).float()
    el2n = residual.norm(dim=1)
    # The cross-entropy gradient with respect to the head is the outer product of the residual and
    # [hidden, 1], so its norm factorizes. The full-network GraNd would need a backward pass per sample.
    grand = el2n * (hidden.pow(2).sum(dim=1) + 1.0).sqrt()
    meta_x = torch.as_tensor(context.meta.x, dtype=torch.float32)
    return WarmupOutputs(
        pool_embeddings=hidden.numpy().astype(np.float32),
        meta_embeddings=model.features(meta_x).numpy().astype(np.float32),
        el2n=el2n.numpy(),
        grand=grand.numpy(),
        forgetting=forgetting_events(correct_history).numpy().astype(np.float32),
    )
