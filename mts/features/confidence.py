"""The `confidence` group: how sure the classifier is of each sample's label, right now.

Four online columns from the current logits: the probability of the label, the margin from it to
the most probable other class, and the entropy of the softmax. The fourth is EL2N, the L2 norm of
softmax minus the one-hot label (Paul et al., 2021, "Deep Learning on a Data Diet"). A mislabeled
sample tends to keep a low label probability and a large EL2N late in training.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from mts.features.base import FeatureBatch, FeatureGroup, register, standardize_within_batch

logger = logging.getLogger(__name__)


def confidence_columns(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Return the (N, 4) columns label probability, margin, entropy and EL2N, not standardized."""
    probs = F.softmax(logits.float(), dim=1)
    label_prob = probs.gather(1, y.unsqueeze(1)).squeeze(1)
    others = probs.scatter(1, y.unsqueeze(1), float("-inf"))
    margin = label_prob - others.max(dim=1).values
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=1)
    one_hot = F.one_hot(y, num_classes=logits.shape[1]).float()
    el2n = (probs - one_hot).norm(dim=1)
    return torch.stack([label_prob, margin, entropy, el2n], dim=1)


@register
class ConfidenceFeature(FeatureGroup):
    """Label probability, margin, entropy and EL2N of the current forward pass."""

    name = "confidence"
    kind = "online"
    width = 4

    def compute(self, batch: FeatureBatch) -> torch.Tensor:
        return standardize_within_batch(confidence_columns(batch.logits, batch.y))
