"""Classifiers trained on the weighted pool: an MLP and a small 1-D CNN.

Both take flat inputs of any width `(batch, input_dim)`, so every task, bundled or from a file,
works with either. `features()` returns the penultimate-layer representation, which feature groups
that place a sample in representation space use.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from mts.config import ModelConfig
from mts.errors import ConfigError

logger = logging.getLogger(__name__)


class MLP(nn.Module):
    """A ReLU multilayer perceptron with optional BatchNorm after each hidden layer."""

    def __init__(self, input_dim: int, num_classes: int, hidden: list[int], batch_norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU())
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class CNN1d(nn.Module):
    """A small 1-D convolutional network that reads the input vector as a one-channel signal."""

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        channels: list[int],
        kernel_size: int = 5,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels, length = 1, input_dim
        for out_channels in channels:
            layers.append(nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2))
            if batch_norm:
                layers.append(nn.BatchNorm1d(out_channels))
            layers.append(nn.ReLU())
            # Halve the length per block while there is something to halve, so narrow inputs work.
            if length >= 2:
                layers.append(nn.MaxPool1d(2, ceil_mode=True))
                length = (length + 1) // 2
            in_channels = out_channels
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(in_channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, input_dim) -> (batch, 1, input_dim) -> (batch, channels) by global average pooling
        return self.body(x.unsqueeze(1)).mean(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(config: ModelConfig, input_dim: int, num_classes: int) -> nn.Module:
    """Build the classifier named by `config.name` for inputs of width `input_dim`."""
    if config.name == "mlp":
        return MLP(input_dim, num_classes, list(config.hidden), config.batch_norm)
    if config.name == "cnn":
        return CNN1d(input_dim, num_classes, list(config.channels), config.kernel_size, config.batch_norm)
    raise ConfigError(f"model.name={config.name!r} is not a known model; allowed: mlp, cnn")
