"""Functional forwards of the classifier at explicit parameters.

The virtual step evaluates the classifier at `theta' = theta - alpha * grad`, which is not the
module's own parameters, so every forward here goes through `torch.func.functional_call` with an
explicit parameter dict. Buffers are cloned for each call: a BatchNorm layer in training mode would
otherwise update its running statistics during a virtual forward that never happened in training.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]


def parameters_of(module: nn.Module) -> Params:
    """Return the module's own parameters by name (the same tensors, still requiring grad)."""
    return dict(module.named_parameters())


def detached_parameters(module: nn.Module) -> Params:
    """Return detached leaf copies of the module's parameters that require grad."""
    return {name: value.detach().clone().requires_grad_(True) for name, value in module.named_parameters()}


def cloned_buffers(module: nn.Module) -> Params:
    return {name: value.clone() for name, value in module.named_buffers()}


def logits_at(model: nn.Module, params: Params, x: torch.Tensor) -> torch.Tensor:
    """Return the classifier logits at `params`, leaving the module's buffers untouched."""
    return functional_call(model, (params, cloned_buffers(model)), (x,))


def per_sample_losses(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Return the (N,) cross-entropy of each sample at `params`."""
    return F.cross_entropy(logits_at(model, params, x), y, reduction="none")


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put `module` in eval mode for the block and restore its previous mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def meta_loss_at(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Return the mean meta loss at `params` with BatchNorm in eval mode.

    The meta batch is small and real while the pool batch is synthetic; batch statistics of the meta
    batch would make the meta loss depend on which real samples happened to be drawn together.
    """
    with eval_mode(model):
        return F.cross_entropy(logits_at(model, params, x), y)


def flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one flat vector."""
    return torch.cat([tensor.reshape(-1) for tensor in tensors])
