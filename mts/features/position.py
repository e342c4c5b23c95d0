"""The `position` group: where each pool sample sits among the real and the synthetic samples.

Seven offline columns in a representation space, computed once before training and z-scored over
the pool:

- cosine to the real class prototype, and to the synthetic class prototype;
- mean of the top-k cosines to real samples of the same class;
- similarity-weighted kNN label agreement among the k nearest real samples, and among the k
  nearest other pool samples;
- percentile of the distance to the class mean among the pool samples of that class;
- probability of "real" from a cross-fitted domain classifier.

A faithful synthetic sample lies near real samples of its label, and a mislabeled or off-domain
one does not.

The real reference set is the meta split plus the pool samples whose source is `real`. The
representation (`mts.position_representation`) is the raw input, the task's own embeddings, or
the penultimate layer of the warm-up classifier. Cosines are taken after centering on the mean of
the real reference set, so that a representation with only positive values (ReLU outputs) does not
make every cosine close to 1.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from mts.errors import ConfigError
from mts.features.base import FeatureBatch, FeatureContext, FeatureGroup, register, standardize_over_pool
from mts.features.cache import cached_arrays
from mts.features.warmup import warmup_outputs

logger = logging.getLogger(__name__)

# Rows of the similarity matrix computed at once; bounds memory at CHUNK x reference size.
CHUNK = 1024
# Folds of the cross-fitted domain classifier: each sample's probability comes from a model that
# did not see it.
DOMAIN_FOLDS = 5
# L-BFGS iterations and L2 penalty of the domain classifier. The penalty is added to the
# class-balanced mean loss, so 1e-3 regularizes weakly whatever the sample count.
LOGISTIC_ITERATIONS = 50
LOGISTIC_L2 = 1e-3


def representation(context: FeatureContext) -> tuple[np.ndarray, np.ndarray]:
    """Return the (n_pool, h) and (n_meta, h) representations named by `mts.position_representation`."""
    choice = context.config.mts.position_representation
    if choice == "raw":
        return context.pool.x, context.meta.x
    if choice == "embeddings":
        problem = embedding_problem(context.embeddings, len(context.pool), len(context.meta))
        if problem:
            raise ConfigError(problem)
        return context.embeddings["pool"], context.embeddings["meta"]
    outputs = warmup_outputs(context)
    return outputs.pool_embeddings, outputs.meta_embeddings


def embedding_problem(embeddings: dict[str, np.ndarray] | None, pool_size: int, meta_size: int) -> str | None:
    """Return why the task's embeddings cannot serve `mts.position_representation=embeddings`, or None."""
    fix = "use mts.position_representation=warmup or raw, or add embeddings for the pool and meta splits"
    if not embeddings or "pool" not in embeddings or "meta" not in embeddings:
        have = sorted(embeddings) if embeddings else []
        return f"mts.position_representation=embeddings needs task embeddings of the pool and meta splits, but the task has {have}; {fix}"
    for split, size in (("pool", pool_size), ("meta", meta_size)):
        rows = embeddings[split].shape[0]
        if rows != size:
            return f"the task's {split} embeddings have {rows} rows but the {split} split has {size} samples; {fix}"
    return None


def unit_rows(points: torch.Tensor) -> torch.Tensor:
    """Scale each row to unit L2 norm; an all-zero row stays zero, so its cosines are 0."""
    return points / points.norm(dim=1, keepdim=True).clamp_min(1e-12)


def prototype_cosine(
    points: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor, reference_labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Return the cosine of each point to the mean of the reference points of its label (0 if none)."""
    sums = torch.zeros(num_classes, reference.shape[1], dtype=reference.dtype).index_add_(0, reference_labels, reference)
    counts = torch.bincount(reference_labels, minlength=num_classes).to(reference.dtype)
    prototypes = sums / counts.clamp_min(1.0).unsqueeze(1)
    return (unit_rows(points) * unit_rows(prototypes)[labels]).sum(dim=1)


def neighbour_columns(
    points: torch.Tensor,
    labels: torch.Tensor,
    reference: torch.Tensor,
    reference_labels: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (mean top-k cosine to same-label references, similarity-weighted kNN label agreement).

    `exclude[i]` is the row of `reference` that is point i itself (-1 for none), so a sample is never
    its own neighbour. kNN weights are the cosines floored at 0, uniform when all are 0; a point
    with no same-label reference gets a top-k cosine of 0.
    """
    unit_points, unit_reference = unit_rows(points), unit_rows(reference)
    topk_cosine, agreement = [], []
    for start in range(0, len(points), CHUNK):
        rows = slice(start, start + CHUNK)
        similarity = unit_points[rows] @ unit_reference.T  # (chunk, n_reference)
        if exclude is not None:
            own = exclude[rows]
            has_own = own >= 0
            similarity[torch.nonzero(has_own).squeeze(1), own[has_own]] = float("-inf")
        same = reference_labels.unsqueeze(0) == labels[rows].unsqueeze(1)
        topk_cosine.append(_mean_top_k(similarity.masked_fill(~same, float("-inf")), k))
        agreement.append(_knn_agreement(similarity, same, k))
    return torch.cat(topk_cosine), torch.cat(agreement)


def _mean_top_k(similarity: torch.Tensor, k: int) -> torch.Tensor:
    values = similarity.topk(min(k, similarity.shape[1]), dim=1).values
    finite = torch.isfinite(values)
    total = values.masked_fill(~finite, 0.0).sum(dim=1)
    return total / finite.sum(dim=1).clamp_min(1)


def _knn_agreement(similarity: torch.Tensor, same: torch.Tensor, k: int) -> torch.Tensor:
    values, columns = similarity.topk(min(k, similarity.shape[1]), dim=1)
    finite = torch.isfinite(values)
    weights = values.masked_fill(~finite, 0.0).clamp_min(0.0)
    # All neighbours at cosine <= 0: fall back to an unweighted vote of the finite ones.
    no_weight = weights.sum(dim=1, keepdim=True) == 0
    weights = torch.where(no_weight, finite.to(weights.dtype), weights)
    agree = same.gather(1, columns).to(weights.dtype)
    return (weights * agree).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-12)


def distance_percentile(points: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Return, per point, the fraction of same-label points at most as far from their label's mean."""
    percentile = torch.zeros(len(points), dtype=points.dtype)
    for label in range(num_classes):
        members = torch.nonzero(labels == label).squeeze(1)
        if len(members) == 0:
            continue
        distance = (points[members] - points[members].mean(dim=0)).norm(dim=1)
        at_most = (distance.unsqueeze(0) <= distance.unsqueeze(1)).sum(dim=1)
        percentile[members] = at_most.to(points.dtype) / len(members)
    return percentile


def domain_probability(points: np.ndarray, is_real: np.ndarray, seed: int) -> np.ndarray:
    """Return each point's out-of-fold probability of being real from a logistic regression.

    Classes are balanced by weight, because the real set is usually much smaller than the pool.
    Returns 0.5 everywhere when either class has fewer than 2 samples.
    """
    real_count, synthetic_count = int(is_real.sum()), int((~is_real).sum())
    folds = min(DOMAIN_FOLDS, real_count, synthetic_count)
    if folds < 2:
        logger.warning("The domain classifier needs >= 2 real and >= 2 synthetic samples; its column is constant")
        return np.full(len(points), 0.5)
    scaled = torch.as_tensor((points - points.mean(axis=0)) / points.std(axis=0).clip(min=1e-12), dtype=torch.float64)
    target = torch.as_tensor(is_real, dtype=torch.float64)
    probability = np.empty(len(points))
    fold = stratified_folds(is_real, folds, seed)
    for held_out_fold in range(folds):
        train, held_out = fold != held_out_fold, fold == held_out_fold
        weight, bias = _fit_logistic(scaled[train], target[train])
        probability[held_out] = torch.sigmoid(scaled[held_out] @ weight + bias).numpy()
    return probability


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Return a fold number per sample, each class spread evenly over the folds in a seeded order."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        fold[members] = np.arange(len(members)) % folds
    return fold


def _fit_logistic(points: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit a class-balanced, L2-regularized logistic regression by full-batch L-BFGS.

    A fixed iteration budget keeps the cost predictable. The fit need not converge fully, because
    the column is z-scored and mostly its ranking matters to the meta-network.
    """
    weight = torch.zeros(points.shape[1], dtype=points.dtype, requires_grad=True)
    bias = torch.zeros((), dtype=points.dtype, requires_grad=True)
    positives = target.sum()
    # Balanced class weights: each class contributes half of the loss.
    sample_weight = torch.where(target == 1, 0.5 / positives, 0.5 / (len(target) - positives))
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=LOGISTIC_ITERATIONS, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = points @ weight + bias
        loss = (sample_weight * F.binary_cross_entropy_with_logits(logits, target, reduction="none")).sum()
        loss = loss + LOGISTIC_L2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def position_columns(context: FeatureContext) -> np.ndarray:
    """Return the (n_pool, 7) unstandardized position columns of `context`."""
    pool_points, meta_points = (torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in representation(context))
    pool_labels = torch.as_tensor(context.pool.y, dtype=torch.long)
    meta_labels = torch.as_tensor(context.meta.y, dtype=torch.long)
    real_source = context.real_source
    pool_real = torch.as_tensor(context.pool.source == real_source) if real_source is not None else torch.zeros(len(pool_labels), dtype=torch.bool)

    # The real reference set: the meta split, then the real pool samples.
    real_points = torch.cat([meta_points, pool_points[pool_real]])
    real_labels = torch.cat([meta_labels, pool_labels[pool_real]])
    center = real_points.mean(dim=0)
    pool_points, real_points = pool_points - center, real_points - center
    own_real_row = torch.full((len(pool_labels),), -1, dtype=torch.long)
    own_real_row[pool_real] = len(meta_labels) + torch.arange(int(pool_real.sum()))

    k, classes = context.config.mts.position_k, context.num_classes
    synthetic = ~pool_real
    topk_real, knn_real = neighbour_columns(pool_points, pool_labels, real_points, real_labels, k, own_real_row)
    _, knn_pool = neighbour_columns(pool_points, pool_labels, pool_points, pool_labels, k, torch.arange(len(pool_labels)))
    columns = [
        prototype_cosine(pool_points, pool_labels, real_points, real_labels, classes),
        prototype_cosine(pool_points, pool_labels, pool_points[synthetic], pool_labels[synthetic], classes),
        topk_real,
        knn_real,
        knn_pool,
        distance_percentile(pool_points, pool_labels, classes),
    ]
    is_real = np.concatenate([np.ones(len(meta_labels), dtype=bool), pool_real.numpy()])
    both = torch.cat([meta_points - center, pool_points]).numpy()
    p_real = domain_probability(both, is_real, context.config.seed)[len(meta_labels):]
    return np.stack([column.numpy() for column in columns] + [p_real], axis=1)


@register
class PositionFeature(FeatureGroup):
    """Prototype cosines, kNN agreement, distance percentile and domain probability per pool sample."""

    name = "position"
    kind = "offline"
    width = 7

    def __init__(self) -> None:
        self.columns: torch.Tensor | None = None

    def prepare(self, context: FeatureContext) -> None:
        mts = context.config.mts
        settings = {"representation": mts.position_representation, "k": mts.position_k}
        if mts.position_representation == "warmup":
            settings.update(warmup_epochs=mts.feature_warmup_epochs, lr=context.config.train.lr)
        if mts.position_representation == "embeddings":
            # The task's embeddings are not part of its config, so a cache key could not tell them apart.
            columns = position_columns(context)
        else:
            columns = cached_arrays(context, "position", settings, lambda: {"columns": position_columns(context)})["columns"]
        self.columns = standardize_over_pool(columns)

    def compute(self, batch: FeatureBatch) -> torch.Tensor:
        if self.columns is None:
            raise RuntimeError("the position group is not prepared; call Featurizer.prepare(context) first")
        return self.columns[batch.index]
