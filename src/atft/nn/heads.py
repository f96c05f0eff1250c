"""Fusion of temporal and graph embeddings, and the multi-horizon prediction head."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from atft.nn.grn import GatedResidualNetwork


class GatedFusion(nn.Module):
    """Gated residual fusion: z = GRN(t, c=g) = LayerNorm(t + GLU(W1 ELU(W2 t + W3 g + b2) + b1))
    (TFT's GRN with the graph embedding as context): the gate decides how much of the peers' view
    enters, and the residual keeps the temporal embedding when it closes.

    Args:
        hidden: C.
        dropout: GLU dropout (default 0.1).

    Shapes: t ``[B, C]``, g ``[B, C]`` -> ``[B, C]``.
    """

    def __init__(self, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.grn = GatedResidualNetwork(hidden, hidden, hidden, context_dim=hidden, dropout=dropout)

    def forward(self, temporal: torch.Tensor, graph: torch.Tensor) -> torch.Tensor:
        return self.grn(temporal, graph)


class MultiHorizonHead(nn.Module):
    """One two-layer MLP per horizon, batched over horizons with stacked weights:

        y_h = W2_h ELU(W1_h z + b1_h) + b2_h,    W1 [H, C, C_h], W2 [H, C_h, Q]

    With quantiles (Q > 1) the outputs are made monotone in the quantile level: q_1 = o_1,
    q_j = q_{j-1} + softplus(o_j), so quantiles never cross.

    Args:
        hidden: C.
        n_horizons: H.
        n_outputs: Q (1 for point forecasts).
        head_hidden: C_h (default 32).
        dropout: dropout before each layer (default 0.1).

    Shapes: z ``[B, C]`` -> ``[B, H, Q]``.
    """

    def __init__(self, hidden: int, n_horizons: int, n_outputs: int = 1, head_hidden: int = 32,
                 dropout: float = 0.1):
        super().__init__()
        self.n_outputs = n_outputs
        self.w1 = nn.Parameter(torch.empty(n_horizons, hidden, head_hidden))
        self.b1 = nn.Parameter(torch.empty(n_horizons, head_hidden))
        self.w2 = nn.Parameter(torch.empty(n_horizons, head_hidden, n_outputs))
        self.b2 = nn.Parameter(torch.empty(n_horizons, n_outputs))
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's default initialisation, per horizon."""
        for w, b in ((self.w1, self.b1), (self.w2, self.b2)):
            bound = 1.0 / math.sqrt(w.shape[1])
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        hid = F.elu(torch.einsum("bc,hck->bhk", self.dropout(z), self.w1) + self.b1)  # [B, H, C_h]
        out = torch.einsum("bhk,hkq->bhq", self.dropout(hid), self.w2) + self.b2  # [B, H, Q]
        if self.n_outputs > 1:
            out = torch.cat([out[..., :1], F.softplus(out[..., 1:])], dim=-1).cumsum(dim=-1)  # [B, H, Q]
        return out
