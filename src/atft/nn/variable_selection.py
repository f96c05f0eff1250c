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

from atft.nn.fused_embed import FusedEmbedding, fused_applies
from atft.nn.grn import GatedResidualNetwork


def _uniform(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    """nn.Linear's default initialisation U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for stacked weights."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


class VariableSelectionNetwork(nn.Module):
    """Per-variable GRNs + softmax variable weights, batched over variables.

    For each variable f (TFT eqs. 6-8 with a ``d_e``-wide embedding):

        xi_f  = w_f x_f + b_f                                    (linear embedding of the scalar)
        e_f   = LayerNorm(xi_f + GLU_f(W1_f ELU(W2_f xi_f + b2_f) + b1_f)) + beta_f  (GRN_f, width d_e)
        v     = softmax_f(GRN_v(x))                               (selection weights over F)
        out   = concat_f(v_f * e_f)                               (flattened, width F * d_e)

    The per-variable LayerNorm has a shift beta_f but no gain: a gain would be absorbed exactly by the
    variable's block of the projection that follows. ``GRN_v`` reads the raw ``x [.., F]``: TFT feeds it
    the concatenated linear embeddings ``xi``, an affine function of ``x``, which its first linear layer
    absorbs; reading ``x`` is the same function class at 1/d_e of the cost.

    Args:
        n_features: F.
        embed_dim: d_e, per-variable embedding width (default 8).
        hidden_dim: width of the selection GRN (default 64).
        dropout: dropout inside the selection GRN's GLU (default 0.0). The per-variable GRNs have none:
            a dropout mask on ``[F, B*T, d_e]`` costs as much as the GRN itself, and every later gate
            of the model has its own dropout.
        fused: compute the embeddings and their weighting in ``fused_embed``'s compiled kernels where they
            apply (float32 on the CPU, no autocast; default True): the same function without the
            ``[F, B*T, d_e]`` intermediates. False: always the tensor ops of ``embed``.

    Shapes:
        x ``[B, T, F]`` -> (selected ``[B, T, F * d_e]``, weights ``[B, T, F]``).
    """

    def __init__(self, n_features: int, embed_dim: int = 8, hidden_dim: int = 64, dropout: float = 0.0,
                 fused: bool = True):
        super().__init__()
        n, d = n_features, embed_dim
        self.n_features, self.embed_dim, self.fused = n, d, bool(fused)
        self.embed_weight = _uniform((n, d), 1)
        self.embed_bias = _uniform((n, d), 1)
        self.fc_in_weight = _uniform((n, d, d), d)  # W2_f stored as [in, out] for bmm
        self.fc_in_bias = _uniform((n, d), d)
        self.fc_hidden_weight = _uniform((n, d, d), d)  # W1_f
        self.fc_hidden_bias = _uniform((n, d), d)
        self.glu_weight = _uniform((n, d, 2 * d), d)  # [W4_f | W5_f]
        self.glu_bias = _uniform((n, 2 * d), d)
        self.norm_bias = nn.Parameter(torch.zeros(n, d))
        self.selection = GatedResidualNetwork(n, hidden_dim, n, dropout=dropout)

    def _folded(self) -> tuple[torch.Tensor, ...]:
        """The GRN's weights folded for a scalar input: ``W2_f xi + b2_f = x_f w_in + b_in`` (xi is affine in
        x_f) and ``eta1 = W1_f . + b1_f`` merged into the GLU's linear layer ``W_glu``, ``b_glu``.
        ``w_in, b_in [F, 1, d_e]``, ``W_glu [F, d_e, 2 d_e]``, ``b_glu [F, 1, 2 d_e]``."""
        w_in = self.embed_weight.unsqueeze(1) @ self.fc_in_weight
        b_in = self.embed_bias.unsqueeze(1) @ self.fc_in_weight + self.fc_in_bias.unsqueeze(1)
        w_glu = self.fc_hidden_weight @ self.glu_weight
        b_glu = self.fc_hidden_bias.unsqueeze(1) @ self.glu_weight + self.glu_bias.unsqueeze(1)
        return w_in, b_in, w_glu, b_glu

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Per-variable GRN embeddings, features-major. ``x [B, T, F] -> e [F, B*T, d_e]``."""
        b, t, n = x.shape
        x_fm = x.reshape(b * t, n).transpose(0, 1).unsqueeze(-1)  # [F, B*T, 1]
        # affine maps of a scalar as [B*T, 1] x [1, d_e] batched matmuls: their weight gradients are then
        # batched matmuls too, not full-size products followed by reductions
        xi = torch.baddbmm(self.embed_bias.unsqueeze(1), x_fm, self.embed_weight.unsqueeze(1))  # [F, B*T, d_e]
        # folded weights: no [F, B*T, d_e] matmul for W2_f, and one fewer [F, B*T, d_e] activation for W1_f
        w_in, b_in, w_glu, b_glu = self._folded()
        eta2 = torch.baddbmm(b_in, x_fm, w_in)  # [F, B*T, d_e]
        gated = torch.baddbmm(b_glu, F.elu(eta2), w_glu)  # [F, B*T, 2 d_e]
        # LayerNorm_f's gain is left out: after the scalar weight v_f it is absorbed exactly by the
        # variable's block of backbone_projection; its shift is kept
        e = F.layer_norm(xi + F.glu(gated, dim=-1), (self.embed_dim,))  # [F, B*T, d_e]
        return e + self.norm_bias.unsqueeze(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 3 or x.shape[-1] != self.n_features:
            raise ValueError(f"variable selection expects x [B, T, {self.n_features}], got {tuple(x.shape)}")
        b, t, n = x.shape
        weights = torch.softmax(self.selection(x), dim=-1)  # [B, T, F]
        if self.fused and fused_applies(x, weights, self.embed_weight):
            w_in, b_in, w_glu, b_glu = self._folded()
            selected = FusedEmbedding.apply(x.reshape(b * t, n), weights.reshape(b * t, n), self.embed_weight,
                                            self.embed_bias, w_in.squeeze(1), b_in.squeeze(1), w_glu,
                                            b_glu.squeeze(1), self.norm_bias)  # [B*T, F*d_e]
            return selected.reshape(b, t, n * self.embed_dim), weights
        e = self.embed(x)  # [F, B*T, d_e]
        w_fm = weights.reshape(b * t, n).transpose(0, 1).unsqueeze(-1)  # [F, B*T, 1]
        selected = (e * w_fm).transpose(0, 1).reshape(b, t, n * self.embed_dim)  # [B, T, F*d_e]
        return selected, weights
