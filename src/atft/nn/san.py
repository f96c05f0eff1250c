"""Slicing Adaptive Normalization (Liu et al., NeurIPS 2023, "Adaptive Normalization for Non-stationary
Time Series Forecasting: A Temporal Slice Perspective")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from atft.errors import InputError
from atft.nn.norm_base import AdaptiveNorm


class SAN(AdaptiveNorm):
    """Per-slice mean/std normalisation with a statistics-prediction module.

    The window is cut into slices of ``S`` steps aligned to its end (a shorter first slice when S does
    not divide T). For slice s with steps I_s:

        mu_s = mean_{I_s} x,  sigma_s = std_{I_s} x,  y_t = (x_t - mu_s(t)) / (sigma_s(t) + eps)   (SAN eq. 1)

    Statistics prediction (SAN eqs. 3-4): from the slice statistics the module predicts the next
    slice's statistics, mean_hat = mean_x + MLP_mu(mu - mean_x) and std_hat = softplus(MLP_sigma(sigma)).
    The paper de-normalises the forecast slices with them; we have no forecast sequence, so
    ``proj([mean_hat, std_hat])`` becomes ``context [B, C]`` added to the head input.

    Args:
        hidden: C.
        lookback: T.
        slice_len: S (default 5; ``model.norm.san_slice_len``).
        mlp_dim: statistics MLP width (default 32).
        eps: added to sigma (default 1e-5).

    Shapes: ``[B, T, C] -> [B, T, C]``; stats ``(mu [B, T, C], sigma [B, T, C], slice_mu, slice_sigma
    [B, n_slices, C])``; context ``[B, C]``.
    """

    invertible = True

    def __init__(self, hidden: int, lookback: int, slice_len: int = 5, mlp_dim: int = 32, eps: float = 1e-5):
        super().__init__()
        if not 1 <= slice_len <= lookback:
            raise InputError(f"model.norm.san_slice_len must be in 1..{lookback} (the lookback), got {slice_len}")
        self.eps, self.lookback = eps, lookback
        n_slices = -(-lookback // slice_len)
        slice_of_step = (torch.arange(lookback) + (-lookback) % slice_len) // slice_len  # [T]
        self.register_buffer("assign", F.one_hot(slice_of_step, n_slices).float(), persistent=False)  # [T, S_n]
        self.mean_mlp = nn.Sequential(nn.Linear(n_slices, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, 1))
        self.std_mlp = nn.Sequential(nn.Linear(n_slices, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, 1))
        self.proj = nn.Linear(2 * hidden, hidden)

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        if x.shape[1] != self.lookback:
            raise InputError(f"SAN was built for lookback T={self.lookback} (model.lookback), got T={x.shape[1]}")
        assign = self.assign.to(x.dtype)
        counts = assign.sum(0)[None, :, None]  # [1, S_n, 1]
        slice_mu = torch.einsum("btc,ts->bsc", x, assign) / counts  # [B, S_n, C]
        mu = torch.einsum("bsc,ts->btc", slice_mu, assign)  # [B, T, C]
        slice_var = torch.einsum("btc,ts->bsc", (x - mu) ** 2, assign) / counts  # [B, S_n, C]
        # sqrt(var + tiny): the +eps in the division keeps y finite; the tiny term keeps d sqrt finite
        slice_sigma = torch.sqrt(slice_var + 1e-12)
        sigma = torch.einsum("bsc,ts->btc", slice_sigma, assign)  # [B, T, C]
        return (x - mu) / (sigma + self.eps), (mu, sigma, slice_mu, slice_sigma)

    def inverse(self, y: torch.Tensor, stats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        mu, sigma = stats[0], stats[1]
        return y * (sigma + self.eps) + mu

    def context(self, x: torch.Tensor, stats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        slice_mu, slice_sigma = stats[2].transpose(1, 2), stats[3].transpose(1, 2)  # [B, C, S_n]
        mean_x = slice_mu.mean(dim=-1, keepdim=True)  # [B, C, 1]
        mean_hat = mean_x + self.mean_mlp(slice_mu - mean_x)  # [B, C, 1]
        std_hat = F.softplus(self.std_mlp(slice_sigma))  # [B, C, 1]
        return self.proj(torch.cat([mean_hat, std_hat], dim=1).flatten(1))  # [B, C]
