"""The basic feature groups: the per-sample loss and the class and source embeddings."""

from __future__ import annotations

import torch

from mts.features.base import FeatureBatch, FeatureGroup, register, standardize_within_batch


@register
class LossFeature(FeatureGroup):
    """The current per-sample loss, the only input of Meta-Weight-Net."""

    name = "loss"
    kind = "online"
    width = 1

    def compute(self, batch: FeatureBatch) -> torch.Tensor:
        return standardize_within_batch(batch.losses.unsqueeze(1))


@register
class ClassFeature(FeatureGroup):
    """The label, entering the meta-network as a learned embedding."""

    name = "class"
    kind = "static"


@register
class SourceFeature(FeatureGroup):
    """The sample's source (real, or a generator's name), as a learned embedding."""

    name = "source"
    kind = "static"
