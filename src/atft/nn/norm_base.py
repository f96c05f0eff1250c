"""Adaptive-normalisation slot: the common interface plus the simple members (LayerNorm, none, RevIN).

Every member maps ``x [B, T, C] -> (normalized [B, T, C], context [B, C] | None)``. Instance
normalisations (RevIN, FAN, SAN) remove per-sample information (level, scale, dominant frequencies);
their forecasting papers add it back by de-normalising the forecast sequence. Our outputs are
multi-horizon *returns*, not the input sequence, so there is nothing to de-normalise; instead each of
them turns what it removed into ``context [B, C]`` through a learned projection, and the model adds it
to the embedding that enters the prediction head (docs/model.md).
"""

from __future__ import annotations

import torch
from torch import nn


class AdaptiveNorm(nn.Module):
    """Base of the ``adaptive_norm`` slot.

    ``normalize(x) -> (y, stats)``, ``inverse(y, stats) -> x`` (invertible members only),
    ``context(x, stats) -> [B, C] | None`` and ``forward(x) -> (y, context)``.

    Shapes: x ``[B, T, C]`` -> y ``[B, T, C]``, context ``[B, C]``.
    """

    invertible = False

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, object]:
        raise NotImplementedError

    def inverse(self, y: torch.Tensor, stats: object) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} is not invertible")

    def context(self, x: torch.Tensor, stats: object) -> torch.Tensor | None:
        return None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, stats = self.normalize(x)
        return y, self.context(x, stats)


class LayerNormSlot(AdaptiveNorm):
    """LayerNorm over channels at every time step (Ba et al. 2016): the default "gradient fix".

    y_t = (x_t - mean_c x_t) / sqrt(var_c x_t + eps) * gamma + beta. Per step, so it is causal and
    removes no cross-time information (context is None).

    Args:
        hidden: C.

    Shapes: ``[B, T, C] -> [B, T, C]``.
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.norm(x), None


class IdentityNorm(AdaptiveNorm):
    """No normalisation (``adaptive_norm=none``); trivially invertible.

    Shapes: ``[B, T, C] -> [B, T, C]``.
    """

    invertible = True

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x, None

    def inverse(self, y: torch.Tensor, stats: object) -> torch.Tensor:
        return y


class RevIN(AdaptiveNorm):
    """Reversible instance normalisation (Kim et al., ICLR 2022).

    y = gamma * (x - mu) / sigma + beta with mu, sigma^2 = mean / var of x over T per sample and
    channel (sigma = sqrt(var + eps)); inverse x = (y - beta) / gamma * sigma + mu.
    Context: Linear([mu, log sigma]) -> C, the removed level and scale fed forward.

    Args:
        hidden: C.
        eps: variance floor (default 1e-5).

    Shapes: ``[B, T, C] -> [B, T, C]``; stats ``(mu [B, 1, C], sigma [B, 1, C])``.
    """

    invertible = True

    def __init__(self, hidden: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(hidden))
        self.beta = nn.Parameter(torch.zeros(hidden))
        self.stat_proj = nn.Linear(2 * hidden, hidden)

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        mu = x.mean(dim=1, keepdim=True)  # [B, 1, C]
        sigma = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps)  # [B, 1, C]
        return (x - mu) / sigma * self.gamma + self.beta, (mu, sigma)

    def inverse(self, y: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        mu, sigma = stats
        # the tiny floor keeps the division finite if training drives a gamma to exactly zero
        gamma = torch.where(self.gamma.abs() < 1e-12, torch.full_like(self.gamma, 1e-12), self.gamma)
        return (y - self.beta) / gamma * sigma + mu

    def context(self, x: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        mu, sigma = stats
        return self.stat_proj(torch.cat([mu, sigma.log()], dim=-1).squeeze(1))  # [B, C]
