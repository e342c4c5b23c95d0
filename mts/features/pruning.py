"""The `pruning_scores` group: data-pruning scores from the warm-up classifier.

Three offline columns: forgetting events over the warm-up epochs (Toneva et al., 2019), EL2N at the
end of warm-up and GraNd restricted to the last layer (both Paul et al., 2021). Paul et al. average
the scores over several short runs; one run is used here, so the scores are noisier.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from mts.features.base import FeatureBatch, FeatureContext, FeatureGroup, register, standardize_over_pool
from mts.features.warmup import warmup_outputs

logger = logging.getLogger(__name__)


@register
class PruningScoresFeature(FeatureGroup):
    """Forgetting events, EL2N and last-layer GraNd of the warm-up classifier, z-scored over the pool."""

    name = "pruning_scores"
    kind = "offline"
    width = 3

    def __init__(self) -> None:
        self.columns: torch.Tensor | None = None

    def prepare(self, context: FeatureContext) -> None:
        outputs = warmup_outputs(context)
        self.columns = standardize_over_pool(np.stack([outputs.forgetting, outputs.el2n, outputs.grand], axis=1))

    def compute(self, batch: FeatureBatch) -> torch.Tensor:
        if self.columns is None:
            raise RuntimeError("the pruning_scores group is not prepared; call Featurizer.prepare(context) first")
        return self.columns[batch.index]
