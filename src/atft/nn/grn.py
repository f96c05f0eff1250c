"""Gated linear unit and gated residual network (Lim et al. 2021, Temporal Fusion Transformers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GatedLinearUnit(nn.Module):
    """GLU(a) = (W4 a + b4) * sigmoid(W5 a + b5)  (TFT eq. 5).

    Args:
        in_dim: input width.
        out_dim: output width (default ``in_dim``).
        dropout: dropout on the input (default 0.0), as in TFT.

    Shapes: ``[..., in_dim] -> [..., out_dim]``.
    """

    def __init__(self, in_dim: int, out_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        out_dim = in_dim if out_dim is None else out_dim
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(in_dim, 2 * out_dim)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(self.dropout(a)).chunk(2, dim=-1)
        return value * torch.sigmoid(gate)


class GateAddNorm(nn.Module):
    """Gated skip connection: LayerNorm(skip + GLU(a))  (TFT eq. 2 and the 'gate + add & norm' blocks).

    Args:
        in_dim: width of ``a``.
        out_dim: width of ``skip`` and of the output (default ``in_dim``).
        dropout: dropout inside the GLU (default 0.0).

    Shapes: ``a [..., in_dim]``, ``skip [..., out_dim] -> [..., out_dim]``.
    """

    def __init__(self, in_dim: int, out_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        out_dim = in_dim if out_dim is None else out_dim
        self.glu = GatedLinearUnit(in_dim, out_dim, dropout)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, a: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.norm(skip + self.glu(a))


class GatedResidualNetwork(nn.Module):
    """GRN(a, c) = LayerNorm(skip(a) + GLU(eta1)),  eta1 = W1 eta2 + b1,
    eta2 = ELU(W2 a + W3 c + b2)  (TFT eqs. 2-4).

    Args:
        in_dim: width of ``a``.
        hidden_dim: width of eta2.
        out_dim: output width (default ``in_dim``); ``skip`` is a Linear when it differs from ``in_dim``.
        context_dim: width of the optional context ``c`` (default None: no context).
        dropout: dropout inside the GLU (default 0.0).

    Shapes: ``a [..., in_dim]``, ``c [..., context_dim] -> [..., out_dim]``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int | None = None,
        context_dim: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        out_dim = in_dim if out_dim is None else out_dim
        self.skip = nn.Identity() if out_dim == in_dim else nn.Linear(in_dim, out_dim)
        self.fc_in = nn.Linear(in_dim, hidden_dim)
        self.fc_context = None if context_dim is None else nn.Linear(context_dim, hidden_dim, bias=False)
        self.fc_hidden = nn.Linear(hidden_dim, hidden_dim)
        self.gate_norm = GateAddNorm(hidden_dim, out_dim, dropout)

    def forward(self, a: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        eta2 = self.fc_in(a)
        if self.fc_context is not None and context is not None:
            eta2 = eta2 + self.fc_context(context)
        eta1 = self.fc_hidden(F.elu(eta2))
        return self.gate_norm(eta1, self.skip(a))
