"""The `dynamics` group: how each pool sample's fit moves across epochs.

Each pool sample has buffers that are updated every time the training loop visits it, which is
once per epoch. Six columns come from them: the mean and standard deviation of the label probability (dataset cartography, Swayamdipta et al.,
2020), the fraction of visits where the prediction was right, the number of forgetting events
(right at one visit, wrong at the next; Toneva et al., 2019), the area under the margin (mean of
the label logit minus the largest other logit; Pleiss et al., 2020) and an exponential moving
average of the loss. A sample not yet visited has all columns 0.

A batch's columns read the buffers *before* the batch is observed, so they describe past epochs.
The buffers are part of the run state, so a resumed run continues with the same history.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F

from mts.features.base import FeatureBatch, FeatureContext, FeatureGroup, register, standardize_within_batch

logger = logging.getLogger(__name__)

# Weight of the previous average in the loss EMA. At 0.5 an epoch's loss counts half as much after
# every later visit, so the EMA follows the last few epochs.
LOSS_EMA_DECAY = 0.5

_BUFFERS = ("visits", "prob_sum", "prob_square_sum", "correct", "forgetting", "last_correct", "margin_sum", "loss_ema")


@register
class DynamicsFeature(FeatureGroup):
    """Training-dynamics statistics per pool sample, tracked across epochs."""

    name = "dynamics"
    kind = "tracked"
    width = 6

    def __init__(self) -> None:
        # One row per pool sample and one column per name in _BUFFERS, so that a batch reads and
        # writes all of its statistics with one gather and one scatter.
        self.table = torch.zeros(0, len(_BUFFERS), dtype=torch.float64)

    @property
    def buffers(self) -> dict[str, torch.Tensor]:
        """Each statistic by name, as a view of one column of the table."""
        return {name: self.table[:, column] for column, name in enumerate(_BUFFERS)}

    def prepare(self, context: FeatureContext) -> None:
        self.allocate(len(context.pool))

    def allocate(self, pool_size: int) -> None:
        """Create zeroed buffers for `pool_size` samples; `last_correct` is -1 before any visit."""
        self.table = torch.zeros(pool_size, len(_BUFFERS), dtype=torch.float64)
        self.table[:, _BUFFERS.index("last_correct")] = -1.0

    def observe(self, batch: FeatureBatch) -> None:
        self._check_prepared()
        index, logits, y = batch.index, batch.logits.detach().double(), batch.y
        probs = F.softmax(logits, dim=1)
        label_prob = probs.gather(1, y.unsqueeze(1)).squeeze(1)
        correct = (logits.argmax(dim=1) == y).double()
        label_logit = logits.gather(1, y.unsqueeze(1)).squeeze(1)
        other_logit = logits.scatter(1, y.unsqueeze(1), float("-inf")).max(dim=1).values
        losses = batch.losses.detach().double()

        # Training batches are slices of one permutation of the pool, so each index occurs once in a
        # batch and the scatter below writes every row once.
        visits, prob_sum, prob_square_sum, correct_sum, forgetting, last_correct, margin_sum, loss_ema = (
            self.table.index_select(0, index).unbind(1)
        )
        forgotten = (last_correct == 1.0) & (correct == 0.0)
        updated = torch.stack(
            [
                visits + 1,
                prob_sum + label_prob,
                prob_square_sum + label_prob**2,
                correct_sum + correct,
                forgetting + forgotten.double(),
                correct,
                margin_sum + label_logit - other_logit,
                torch.where(visits == 0, losses, LOSS_EMA_DECAY * loss_ema + (1 - LOSS_EMA_DECAY) * losses),
            ],
            dim=1,
        )
        self.table.index_copy_(0, index, updated)

    def raw_columns(self, index: torch.Tensor) -> torch.Tensor:
        """Return the (N, 6) unstandardized columns: mean and std of the label probability,
        fraction correct, forgetting events, area under the margin, loss EMA."""
        self._check_prepared()
        visits, prob_sum, prob_square_sum, correct_sum, forgetting, _, margin_sum, loss_ema = (
            self.table.index_select(0, index).unbind(1)
        )
        visits = visits.clamp_min(1.0)
        mean_prob = prob_sum / visits
        std_prob = (prob_square_sum / visits - mean_prob**2).clamp_min(0.0).sqrt()
        return torch.stack([mean_prob, std_prob, correct_sum / visits, forgetting, margin_sum / visits, loss_ema], dim=1)

    def compute(self, batch: FeatureBatch) -> torch.Tensor:
        return standardize_within_batch(self.raw_columns(batch.index)).float()

    def state_dict(self) -> dict[str, Any]:
        return {name: buffer.clone() for name, buffer in self.buffers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            logger.warning("The run state has no dynamics buffers; the dynamics group starts from empty buffers")
            return
        self.table = torch.stack([state[name].double() for name in _BUFFERS], dim=1).contiguous()

    def _check_prepared(self) -> None:
        if self.table.shape[0] == 0:
            raise RuntimeError("the dynamics feature group has no buffers; call Featurizer.prepare(context) first")
