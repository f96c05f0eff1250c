"""Frequency Adaptive Normalization (Ye et al., NeurIPS 2024, "Frequency Adaptive Normalization for
Non-stationary Time Series Forecasting")."""

from __future__ import annotations

import torch
from torch import nn

from atft.errors import InputError
from atft.nn.norm_base import AdaptiveNorm


def top_k_frequency_component(x: torch.Tensor, k: int) -> torch.Tensor:
    """The part of ``x`` carried by its ``k`` largest-amplitude rFFT frequencies, per sample and channel.

    X = rFFT_T(x);  S = top-k_{|X|} indices;  x_non = irFFT(X * 1[S]).  Computed in float32 (the FFT has
    no bf16 kernels; float64 stays float64); the mask is chosen without gradient, the gradient flows
    through the values.

    Shapes: ``x [B, T, C] -> [B, T, C]`` in float32 or float64.
    """
    t = x.shape[1]
    with torch.autocast(device_type=x.device.type, enabled=False):
        full = x if x.dtype in (torch.float32, torch.float64) else x.float()
        spec = torch.fft.rfft(full, dim=1)  # [B, T//2+1, C] complex
        with torch.no_grad():
            amp = spec.abs()  # [B, T//2+1, C]
            idx = amp.topk(min(k, amp.shape[1]), dim=1).indices  # [B, K, C]
            keep = torch.zeros_like(amp).scatter_(1, idx, 1.0)  # [B, T//2+1, C]
        return torch.fft.irfft(spec * keep, n=t, dim=1)  # [B, T, C]


class FAN(AdaptiveNorm):
    """Frequency adaptive normalisation.

    Per sample and channel the K dominant rFFT components along T are the non-stationary part:

        x_non = irFFT(TopK(rFFT(x))),   y = x - x_non                       (FAN eqs. 2-4)
        z_non = MLP(x_non, x): z1 = ReLU(W1 x_non + b1), z = W3 ReLU(W2 [z1; x] + b2) + b3   (eq. 7)

    The MLP runs along the time axis of each channel (weights shared across channels, as in the
    paper's channel-independent setting). The paper predicts the future non-stationary sequence and
    adds it to the backbone's forecast; we have no forecast sequence, so the MLP predicts a
    ``pred_dim``-long summary of the next non-stationary values per channel, and ``proj`` maps it to
    ``context [B, C]``, which the model adds to the head input ("add the removed part back").

    Args:
        hidden: C.
        lookback: T (the MLP reads whole windows).
        top_k: K, components removed (default 4; ``model.norm.fan_top_k``).
        mlp_dim: MLP width (default 64).
        pred_dim: per-channel predicted summary length (default 1).

    Shapes: ``[B, T, C] -> [B, T, C]``; stats ``x_non [B, T, C]``; context ``[B, C]``.
    """

    invertible = True

    def __init__(self, hidden: int, lookback: int, top_k: int = 4, mlp_dim: int = 64, pred_dim: int = 1):
        super().__init__()
        if top_k < 1:
            raise InputError(f"model.norm.fan_top_k must be >= 1, got {top_k}")
        self.top_k, self.lookback = top_k, lookback
        self.fc_non = nn.Linear(lookback, mlp_dim)
        self.fc_mix = nn.Linear(mlp_dim + lookback, mlp_dim)
        self.fc_out = nn.Linear(mlp_dim, pred_dim)
        self.proj = nn.Linear(hidden * pred_dim, hidden)

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_non = top_k_frequency_component(x, self.top_k).to(x.dtype)  # [B, T, C]
        return x - x_non, x_non

    def inverse(self, y: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        return y + stats

    def context(self, x: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.lookback:
            raise InputError(f"FAN was built for lookback T={self.lookback} (model.lookback), got T={x.shape[1]}")
        non_ct, x_ct = stats.transpose(1, 2), x.transpose(1, 2)  # [B, C, T]
        z1 = torch.relu(self.fc_non(non_ct))  # [B, C, mlp]
        z = self.fc_out(torch.relu(self.fc_mix(torch.cat([z1, x_ct], dim=-1))))  # [B, C, pred_dim]
        return self.proj(z.flatten(1))  # [B, C]
