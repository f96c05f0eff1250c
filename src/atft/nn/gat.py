"""Graph attention over the day graph: two PyG GATv2Conv layers (Brody et al., ICLR 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATv2Conv

from atft.errors import InputError


def self_loop_graph(n: int, device: torch.device, edge_dim: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-loops only: ``edge_index [2, n]`` and ``edge_attr [n, edge_dim]`` = [1, 0, 0] (corr with itself 1,
    metadata unknown). Used when no day graph is given."""
    idx = torch.arange(n, device=device)
    attr = torch.zeros(n, edge_dim, device=device)
    attr[:, 0] = 1.0
    return torch.stack([idx, idx]), attr


class GraphAttentionBlock(nn.Module):
    """Residual GATv2 stack over one or more day graphs.

    For each layer l:  h^{l+1} = LayerNorm(h^l + Dropout(ELU(GATv2Conv_l(h^l, E, edge_attr))))
    with GATv2 attention  alpha_ij = softmax_j(a^T LeakyReLU(W [h_i; h_j; W_e e_ij]))  and heads
    concatenated (``heads`` x ``C/heads`` channels: the fast layout, DESIGN.md performance note).

    The graph must carry its own self-loops (``DayGraphBuilder`` adds exactly one per stock), so the
    convolution does not add any (it would overwrite their edge attributes with a mean fill). Without
    ``edge_index`` every node gets only its self-loop.

    Args:
        hidden: C (divisible by ``heads``).
        layers: number of GATv2Conv layers (default 2).
        heads: attention heads (default 4).
        dropout: dropout on attention coefficients and on the residual branch (default 0.1).
        edge_dim: edge-attribute width (default 3: corr, same_sector, same_market).

    Shapes: h ``[B, C]``, edge_index ``[2, E]`` (indices into 0..B-1), edge_attr ``[E, edge_dim]`` -> ``[B, C]``.
    """

    def __init__(self, hidden: int, layers: int = 2, heads: int = 4, dropout: float = 0.1, edge_dim: int = 3):
        super().__init__()
        if hidden % heads:
            raise InputError(f"model.hidden_size={hidden} must be divisible by model.gat.heads={heads}")
        self.edge_dim = edge_dim
        self.convs = nn.ModuleList(
            GATv2Conv(hidden, hidden // heads, heads=heads, concat=True, dropout=dropout,
                      add_self_loops=False, edge_dim=edge_dim)
            for _ in range(layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        h: torch.Tensor,
        edge_index: torch.Tensor | None = None,
        edge_attr: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        if edge_index is None:
            edge_index, edge_attr = self_loop_graph(h.shape[0], h.device, self.edge_dim)
        elif edge_attr is None:
            raise ValueError("gat: edge_index was given without edge_attr [E, 3]")
        edge_attr = edge_attr.to(h.dtype)
        attentions = []
        for conv, norm in zip(self.convs, self.norms):
            if return_attention:
                out, att = conv(h, edge_index, edge_attr, return_attention_weights=True)  # ([2, E], [E, heads])
                attentions.append(att)
            else:
                out = conv(h, edge_index, edge_attr)  # [B, C]
            h = norm(h + self.dropout(F.elu(out)))
        return (h, attentions) if return_attention else h


class GraphPassThrough(nn.Module):
    """``model.gat.enabled=false``: no graph layer; the graph embedding is the temporal embedding itself,
    so the fusion sees the same vector twice and the model reduces to the temporal encoder.

    Shapes: ``[B, C] -> [B, C]``.
    """

    def forward(self, h: torch.Tensor, edge_index=None, edge_attr=None, return_attention: bool = False):
        return (h, []) if return_attention else h
