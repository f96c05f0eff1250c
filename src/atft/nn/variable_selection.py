"""Batched variable selection network (TFT, Lim et al. 2021, sec. 4.2) that never builds [B, T, F, C].

TFT gives every input variable its own GRN producing a C-wide embedding and mixes them with softmax
weights, which materialises ``[B, T, F, C]`` tensors (90-97% of a TFT training step, DESIGN.md). Here each
variable gets a small ``d_e``-wide embedding (``model.vsn_embed_dim``, default 8), all F per-variable
GRNs run as one batched matmul over stacked ``[F, ...]`` weights, and the weighted embeddings are
flattened to ``[B, T, F * d_e]`` so that ONE Linear(F*d_e -> C) (the model's ``backbone_projection``)
gives ``sum_f v_f W_f e_f`` -- the same function class as TFT's ``sum_f v_f e_f`` with C-wide
per-variable embeddings, without the ``[B, T, F, C]`` intermediate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from atft.nn.grn import GatedResidualNetwork


def _uniform(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    """nn.Linear's default initialisation U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for stacked weights."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


class VariableSelectionNetwork(nn.Module):
    """Per-variable GRNs + softmax variable weights, batched over variables.

    For each variable f (TFT eqs. 6-8 with a ``d_e``-wide embedding):

        xi_f  = w_f x_f + b_f                                    (linear embedding of the scalar)
        e_f   = LayerNorm_f(xi_f + GLU_f(W1_f ELU(W2_f xi_f + b2_f) + b1_f))      (GRN_f, width d_e)
        v     = softmax_f(GRN_v(x))                               (selection weights over F)
        out   = concat_f(v_f * e_f)                               (flattened, width F * d_e)

    ``GRN_v`` reads the raw ``x [.., F]``: TFT feeds it the concatenated linear embeddings ``xi``, an
    affine function of ``x``, so its first linear layer absorbs them; reading ``x`` is the same function
    class at 1/d_e of the cost.

    Args:
        n_features: F.
        embed_dim: d_e, per-variable embedding width (default 8).
        hidden_dim: width of the selection GRN (default 64).
        dropout: dropout inside the selection GRN's GLU (default 0.0). The per-variable GRNs have none:
            a dropout mask on ``[F, B*T, d_e]`` costs as much as the GRN itself, and every later gate
            of the model has its own dropout.

    Shapes:
        x ``[B, T, F]`` -> (selected ``[B, T, F * d_e]``, weights ``[B, T, F]``).
    """

    def __init__(self, n_features: int, embed_dim: int = 8, hidden_dim: int = 64, dropout: float = 0.0):
        super().__init__()
        n, d = n_features, embed_dim
        self.n_features, self.embed_dim = n, d
        self.embed_weight = _uniform((n, d), 1)
        self.embed_bias = _uniform((n, d), 1)
        self.fc_in_weight = _uniform((n, d, d), d)  # W2_f stored as [in, out] for bmm
        self.fc_in_bias = _uniform((n, d), d)
        self.fc_hidden_weight = _uniform((n, d, d), d)  # W1_f
        self.fc_hidden_bias = _uniform((n, d), d)
        self.glu_weight = _uniform((n, d, 2 * d), d)  # [W4_f | W5_f]
        self.glu_bias = _uniform((n, 2 * d), d)
        self.norm_weight = nn.Parameter(torch.ones(n, d))
        self.norm_bias = nn.Parameter(torch.zeros(n, d))
        self.selection = GatedResidualNetwork(n, hidden_dim, n, dropout=dropout)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Per-variable GRN embeddings, features-major. ``x [B, T, F] -> e [F, B*T, d_e]``."""
        b, t, n = x.shape
        x_fm = x.reshape(b * t, n).transpose(0, 1).unsqueeze(-1)  # [F, B*T, 1]
        xi = torch.addcmul(self.embed_bias.unsqueeze(1), x_fm, self.embed_weight.unsqueeze(1))  # [F, B*T, d_e]
        # xi is affine in the scalar x_f, so W2_f xi + b2_f = x_f (w_f W2_f) + (b_f W2_f + b2_f): one
        # fused multiply-add on [F, B*T, d_e] instead of a batched matmul (same numbers, fewer passes)
        w_in = (self.embed_weight.unsqueeze(1) @ self.fc_in_weight).squeeze(1)  # [F, d_e]
        b_in = (self.embed_bias.unsqueeze(1) @ self.fc_in_weight).squeeze(1) + self.fc_in_bias  # [F, d_e]
        eta2 = torch.addcmul(b_in.unsqueeze(1), x_fm, w_in.unsqueeze(1))  # [F, B*T, d_e]
        eta1 = torch.baddbmm(self.fc_hidden_bias.unsqueeze(1), F.elu(eta2), self.fc_hidden_weight)
        gated = torch.baddbmm(self.glu_bias.unsqueeze(1), eta1, self.glu_weight)  # [F, B*T, 2 d_e]
        e = F.layer_norm(xi + F.glu(gated, dim=-1), (self.embed_dim,))  # [F, B*T, d_e]
        return torch.addcmul(self.norm_bias.unsqueeze(1), e, self.norm_weight.unsqueeze(1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 3 or x.shape[-1] != self.n_features:
            raise ValueError(f"variable selection expects x [B, T, {self.n_features}], got {tuple(x.shape)}")
        b, t, n = x.shape
        weights = torch.softmax(self.selection(x), dim=-1)  # [B, T, F]
        e = self.embed(x)  # [F, B*T, d_e]
        w_fm = weights.reshape(b * t, n).transpose(0, 1).unsqueeze(-1)  # [F, B*T, 1]
        selected = (e * w_fm).transpose(0, 1).reshape(b, t, n * self.embed_dim)  # [B, T, F*d_e]
        return selected, weights
