"""The bi-level step of MTS: virtual step, meta loss, meta-gradient, real update.

For pool losses l_i(theta) and normalized weights p_i(phi), one virtual step
`theta' = theta - alpha * grad_theta sum_i p_i l_i` is taken, the meta loss `L_meta(theta')` on a
real meta batch is measured, and its gradient with respect to the meta-network parameters phi
updates the meta-network. Two ways to get that gradient:

- `exact`: differentiate through the virtual step with `create_graph=True`;
- `finite_difference`: the DARTS approximation (Liu et al., 2019) of the mixed second derivative,
  `-alpha * (grad_phi L_train(theta + eps v) - grad_phi L_train(theta - eps v)) / (2 eps)` with
  `v = grad_theta L_meta(theta')` and `eps = r / |v|`; no second-order graph, so memory does not
  grow with depth.

Features are inputs of the meta-network and are held fixed (detached) throughout a step.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from mts.config import MTSConfig
from mts.functional import (
    Params,
    detached_parameters,
    flatten,
    meta_loss_at,
    parameters_of,
    per_sample_losses,
)
from mts.metanet import MetaNetwork
from mts.weights import normalize_weights

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class PoolBatch:
    """A pool batch with its (detached) meta-network features."""

    index: torch.Tensor  # (N,)
    x: torch.Tensor  # (N, d)
    y: torch.Tensor  # (N,)
    source: torch.Tensor  # (N,)
    features: torch.Tensor  # (N, F)


@dataclasses.dataclass
class MetaBatch:
    """A batch of real meta samples."""

    x: torch.Tensor
    y: torch.Tensor


class BilevelStep:
    """Meta-gradients of the meta-network for one classifier and one meta-network."""

    def __init__(self, model: nn.Module, metanet: MetaNetwork, config: MTSConfig) -> None:
        self.model = model
        self.metanet = metanet
        self.config = config

    # Weights -----------------------------------------------------------------------------------

    def raw_weights(self, batch: PoolBatch) -> torch.Tensor:
        """Return w_i = sigmoid(g_phi(f_i)), differentiable with respect to phi."""
        return torch.sigmoid(self.metanet(batch.features, batch.y, batch.source))

    def normalized_weights(self, batch: PoolBatch) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Return the raw weights, the normalized weights p_i and whether the sum floor was hit."""
        raw = self.raw_weights(batch)
        p, floor_hit = normalize_weights(raw, self.config.eps)
        return raw, p, floor_hit

    # Meta-gradients ----------------------------------------------------------------------------

    def meta_gradient(
        self, batch: PoolBatch, meta: MetaBatch, losses: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], float]:
        """Return the meta-gradient (one tensor per meta-network parameter) and the meta loss.

        `losses`, when given, are the per-sample losses of `batch` at the model's own parameters
        with their graph, so the exact method can reuse the forward of the real update.
        """
        if self.config.gradient == "finite_difference":
            return self.finite_difference_meta_gradient(batch, meta)
        return self.exact_meta_gradient(batch, meta, losses)

    def exact_meta_gradient(
        self, batch: PoolBatch, meta: MetaBatch, losses: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], float]:
        """Differentiate the meta loss through the virtual step (second order)."""
        theta = parameters_of(self.model)
        if losses is None:
            losses = per_sample_losses(self.model, theta, batch.x, batch.y)
        _, p, _ = self.normalized_weights(batch)

        virtual = self._virtual_step(theta, (p * losses).sum(), create_graph=True)
        meta_loss = meta_loss_at(self.model, virtual, meta.x, meta.y)

        phi = list(self.metanet.parameters())
        # The graph of `losses` may be reused by the caller's real update, hence retain_graph.
        grads = torch.autograd.grad(meta_loss, phi, allow_unused=True, retain_graph=True)
        return _zeros_for_unused(grads, phi), float(meta_loss.detach())

    def finite_difference_meta_gradient(self, batch: PoolBatch, meta: MetaBatch) -> tuple[list[torch.Tensor], float]:
        """Approximate the meta-gradient by a central difference along v = grad L_meta(theta')."""
        alpha = self.config.virtual_lr
        theta = detached_parameters(self.model)
        with torch.no_grad():
            _, p, _ = self.normalized_weights(batch)
        losses = per_sample_losses(self.model, theta, batch.x, batch.y)
        virtual = self._virtual_step(theta, (p * losses).sum(), create_graph=False)
        virtual = {name: value.detach().requires_grad_(True) for name, value in virtual.items()}

        meta_loss = meta_loss_at(self.model, virtual, meta.x, meta.y)
        direction = torch.autograd.grad(meta_loss, list(virtual.values()))
        norm = float(flatten(list(direction)).norm())
        phi = list(self.metanet.parameters())
        if norm == 0.0:
            return [torch.zeros_like(value) for value in phi], float(meta_loss.detach())

        eps = self.config.fd_radius / norm
        plus = self._train_loss_phi_gradient(theta, direction, eps, batch)
        minus = self._train_loss_phi_gradient(theta, direction, -eps, batch)
        grads = [-alpha * (g_plus - g_minus) / (2 * eps) for g_plus, g_minus in zip(plus, minus)]
        return grads, float(meta_loss.detach())

    def _train_loss_phi_gradient(
        self, theta: Params, direction: tuple[torch.Tensor, ...], eps: float, batch: PoolBatch
    ) -> list[torch.Tensor]:
        """Return grad_phi of sum_i p_i(phi) l_i(theta + eps * direction)."""
        with torch.no_grad():
            shifted = {name: value + eps * step for (name, value), step in zip(theta.items(), direction)}
            losses = per_sample_losses(self.model, shifted, batch.x, batch.y)
        _, p, _ = self.normalized_weights(batch)
        phi = list(self.metanet.parameters())
        grads = torch.autograd.grad((p * losses).sum(), phi, allow_unused=True)
        return _zeros_for_unused(grads, phi)

    def _virtual_step(self, theta: Params, train_loss: torch.Tensor, create_graph: bool) -> Params:
        """Return theta' = theta - alpha * grad_theta train_loss."""
        grads = torch.autograd.grad(train_loss, list(theta.values()), create_graph=create_graph, retain_graph=True)
        return {name: value - self.config.virtual_lr * g for (name, value), g in zip(theta.items(), grads)}

    # Per-sample meta-gradients -------------------------------------------------------------------

    def per_sample_meta_gradients(self, batch: PoolBatch, meta: MetaBatch) -> torch.Tensor:
        """Return the (N, P) per-sample meta-gradients h_i, whose mean is the batch meta-gradient.

        With u = grad_theta L_meta(theta') and a_i = u . grad_theta l_i(theta), the exact meta-gradient
        is `-alpha / S * sum_i (a_i - sum_j p_j a_j) * grad_phi w_i`. Sample i's share, scaled by N,
        is h_i. The a_i come from one forward-mode JVP of the per-sample losses along u, and the
        per-sample grad_phi w_i from `torch.func.vmap`.
        """
        theta, u, p, total = self._meta_direction(batch, meta)
        _, alignment = jvp(lambda params: per_sample_losses(self.model, params, batch.x, batch.y), (theta,), (u,))
        count = batch.y.shape[0]
        coefficient = -self.config.virtual_lr * count / total * (alignment - (p * alignment).sum())

        phi = {name: value.detach() for name, value in self.metanet.named_parameters()}

        def weight_of_one(params: Params, features: torch.Tensor, y: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
            logit = functional_call(self.metanet, params, (features[None], y[None], source[None]))
            return torch.sigmoid(logit)[0]

        weight_grads = vmap(grad(weight_of_one), in_dims=(None, 0, 0, 0))(phi, batch.features, batch.y, batch.source)
        flat = torch.cat([weight_grads[name].reshape(count, -1) for name in phi], dim=1)
        return coefficient.unsqueeze(1) * flat

    def per_sample_meta_gradients_looped(self, batch: PoolBatch, meta: MetaBatch) -> torch.Tensor:
        """Compute `per_sample_meta_gradients` one sample at a time with autograd.

        This slow reference exists so the test suite can check the vectorized version against it
        and the benchmarks can measure the speed-up.
        """
        theta, u, p, total = self._meta_direction(batch, meta)
        u_flat = flatten(list(u.values()))
        count = batch.y.shape[0]
        theta = {name: value.clone().requires_grad_(True) for name, value in theta.items()}
        losses = per_sample_losses(self.model, theta, batch.x, batch.y)
        alignment = torch.stack(
            [flatten(list(torch.autograd.grad(losses[i], list(theta.values()), retain_graph=True))) @ u_flat for i in range(count)]
        )
        coefficient = -self.config.virtual_lr * count / total * (alignment - (p * alignment).sum())

        phi = list(self.metanet.parameters())
        raw = self.raw_weights(batch)
        rows = []
        for i in range(count):
            weight_grad = _zeros_for_unused(torch.autograd.grad(raw[i], phi, retain_graph=True, allow_unused=True), phi)
            rows.append(coefficient[i].detach() * flatten(weight_grad))
        return torch.stack(rows)

    def _meta_direction(self, batch: PoolBatch, meta: MetaBatch) -> tuple[Params, Params, torch.Tensor, torch.Tensor]:
        """Return theta (detached), u = grad L_meta(theta'), the weights p and the floored sum S."""
        theta = detached_parameters(self.model)
        with torch.no_grad():
            raw = self.raw_weights(batch)
            p, _ = normalize_weights(raw, self.config.eps)
            total = raw.sum().clamp_min(self.config.eps * raw.shape[0])
        losses = per_sample_losses(self.model, theta, batch.x, batch.y)
        virtual = self._virtual_step(theta, (p * losses).sum(), create_graph=False)
        virtual = {name: value.detach().requires_grad_(True) for name, value in virtual.items()}
        meta_loss = meta_loss_at(self.model, virtual, meta.x, meta.y)
        u = dict(zip(virtual, torch.autograd.grad(meta_loss, list(virtual.values()))))
        theta = {name: value.detach() for name, value in theta.items()}
        return theta, u, p, total


def l2rw_weights(model: nn.Module, x: torch.Tensor, y: torch.Tensor, meta: MetaBatch, alpha: float) -> torch.Tensor:
    """Return Learning-to-Reweight weights for one batch (Ren et al., 2018).

    The weight of sample i is the clipped alignment `max(alpha * u . grad l_i, 0)` of its loss
    gradient with the meta gradient `u = grad L_meta(theta)`, normalized to sum to one. This is the
    negative gradient of the meta loss after a virtual step with per-sample perturbations at zero.
    A batch where every alignment is negative gets all-zero weights and so no update.
    """
    theta = detached_parameters(model)
    meta_loss = meta_loss_at(model, theta, meta.x, meta.y)
    u = dict(zip(theta, torch.autograd.grad(meta_loss, list(theta.values()))))
    theta = {name: value.detach() for name, value in theta.items()}
    _, alignment = jvp(lambda params: per_sample_losses(model, params, x, y), (theta,), (u,))
    weights = (alpha * alignment).clamp_min(0.0)
    total = weights.sum()
    return weights / total if total > 0 else weights


def _zeros_for_unused(grads: tuple[torch.Tensor | None, ...], params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
