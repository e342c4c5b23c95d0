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
        self.buffers: dict[str, torch.Tensor] = {}

    def prepare(self, context: FeatureContext) -> None:
        self.allocate(len(context.pool))

    def allocate(self, pool_size: int) -> None:
        """Create zeroed buffers for `pool_size` samples; `last_correct` is -1 before any visit."""
        self.buffers = {name: torch.zeros(pool_size, dtype=torch.float64) for name in _BUFFERS}
        self.buffers["last_correct"].fill_(-1.0)

    def observe(self, batch: FeatureBatch) -> None:
        self._check_prepared()
        index, logits, y = batch.index, batch.logits.detach().double(), batch.y
        probs = F.softmax(logits, dim=1)
        label_prob = probs.gather(1, y.unsqueeze(1)).squeeze(1)
        correct = (logits.argmax(dim=1) == y).double()
        label_logit = logits.gather(1, y.unsqueeze(1)).squeeze(1)
        other_logit = logits.scatter(1, y.unsqueeze(1), float("-inf")).max(dim=1).values

        b = self.buffers
        first_visit = b["visits"][index] == 0
        forgotten = (b["last_correct"][index] == 1.0) & (correct == 0.0)
        b["visits"][index] += 1
        b["prob_sum"][index] += label_prob
        b["prob_square_sum"][index] += label_prob**2
        b["correct"][index] += correct
        b["forgetting"][index] += forgotten.double()
        b["last_correct"][index] = correct
        b["margin_sum"][index] += label_logit - other_logit
        losses = batch.losses.detach().double()
        previous = b["loss_ema"][index]
        b["loss_ema"][index] = torch.where(first_visit, losses, LOSS_EMA_DECAY * previous + (1 - LOSS_EMA_DECAY) * losses)

    def raw_columns(self, index: torch.Tensor) -> torch.Tensor:
        """Return the (N, 6) unstandardized columns: mean and std of the label probability,
        fraction correct, forgetting events, area under the margin, loss EMA."""
        self._check_prepared()
        b = {name: buffer[index] for name, buffer in self.buffers.items()}
        visits = b["visits"].clamp_min(1.0)
        mean_prob = b["prob_sum"] / visits
        std_prob = (b["prob_square_sum"] / visits - mean_prob**2).clamp_min(0.0).sqrt()
        columns = torch.stack(
            [mean_prob, std_prob, b["correct"] / visits, b["forgetting"], b["margin_sum"] / visits, b["loss_ema"]],
            dim=1,
        )
        return columns

    def compute(self, batch: FeatureBatch) -> torch.Tensor:
        return standardize_within_batch(self.raw_columns(batch.index)).float()

    def state_dict(self) -> dict[str, Any]:
        return {name: buffer.clone() for name, buffer in self.buffers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            logger.warning("The run state has no dynamics buffers; the dynamics group starts from empty buffers")
            return
        self.buffers = {name: state[name].clone().double() for name in _BUFFERS}

    def _check_prepared(self) -> None:
        if not self.buffers:
            raise RuntimeError("the dynamics feature group has no buffers; call Featurizer.prepare(context) first")
