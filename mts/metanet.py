"""The meta-network: per-sample features to a raw weight in (0, 1).

An MLP (two hidden layers of 100 by default) reads the continuous feature columns, plus small
learned embeddings of the class and the source when those groups are selected, and outputs one
logit per sample; `sigmoid` of it is the raw weight `w_i`.
"""

from __future__ import annotations

import torch
from torch import nn


class MetaNetwork(nn.Module):
    """Map (features, label, source) of each pool sample to a raw weight logit."""

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        num_sources: int,
        hidden: list[int],
        embedding_dim: int = 8,
        use_class: bool = False,
        use_source: bool = False,
        init_bias: float = 0.0,
    ) -> None:
        super().__init__()
        self.class_embedding = nn.Embedding(num_classes, embedding_dim) if use_class else None
        self.source_embedding = nn.Embedding(max(num_sources, 1), embedding_dim) if use_source else None
        width = feature_dim + embedding_dim * (int(use_class) + int(use_source))
        if width == 0:
            raise ValueError("the meta-network has no input: select at least one feature group")
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)
        nn.init.constant_(self.head.bias, init_bias)

    def forward(self, features: torch.Tensor, y: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Return the (N,) weight logits; `features` is (N, feature_dim)."""
        inputs = [features]
        if self.class_embedding is not None:
            inputs.append(self.class_embedding(y))
        if self.source_embedding is not None:
            inputs.append(self.source_embedding(source))
        return self.head(self.body(torch.cat(inputs, dim=1))).squeeze(1)
