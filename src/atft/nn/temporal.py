"""Causal temporal encoder: LSTM + interpretable multi-head attention (TFT, Lim et al. 2021, sec. 4.4-4.5)."""

from __future__ import annotations

import math

import torch
from torch import nn

from atft.errors import InputError
from atft.nn.grn import GateAddNorm, GatedResidualNetwork


class InterpretableMultiHeadAttention(nn.Module):
    """TFT's interpretable multi-head attention with a causal mask (eqs. 13-16).

        A_h = softmax(Q W_Q^h (K W_K^h)^T / sqrt(d) + M),   H~ = (1/m) sum_h A_h V W_V,   out = H~ W_H

    The value projection W_V is shared by all m heads so the averaged attention (1/m) sum_h A_h is one
    interpretable pattern. M is -inf above the diagonal (step t sees steps <= t) and at padded keys;
    a step always sees itself, so no row is empty.

    Args:
        hidden: C.
        heads: m (default 4); C must be divisible by m.
        dropout: attention dropout (default 0.0).

    Shapes: x ``[B, T, C]``, key_mask ``[B, T]`` bool (True = valid) -> (``[B, T_q, C]``, attention
    ``[B, m, T_q, T]``) with T_q = T, or 1 with ``last_only`` (the last step's query alone).
    """

    def __init__(self, hidden: int, heads: int = 4, dropout: float = 0.0):
        super().__init__()
        if hidden % heads:
            raise InputError(f"model.hidden_size={hidden} must be divisible by model.temporal.attention_heads={heads}")
        self.heads, self.head_dim = heads, hidden // heads
        self.qk = nn.Linear(hidden, 2 * hidden)
        self.value = nn.Linear(hidden, self.head_dim)
        self.out = nn.Linear(self.head_dim, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None = None, last_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        q, k = self.qk(x).view(b, t, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # [B, m, T, d] each
        if last_only:  # only the last step's query: all a sample embedding needs
            q = q[:, :, -1:]  # [B, m, 1, d]
        v = self.value(x)  # [B, T, d], shared across heads
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # [B, m, T_q, T]
        n_q = scores.shape[2]
        # query i sits at step t - n_q + i and sees keys <= it (causal), valid keys, and always itself
        allowed = torch.ones(n_q, t, dtype=torch.bool, device=x.device).tril(diagonal=t - n_q)  # [T_q, T]
        if key_mask is not None:
            steps = torch.arange(t, device=x.device)
            itself = steps[None, :] == steps[t - n_q :, None]  # [T_q, T]
            allowed = allowed & (key_mask[:, None, None, :] | itself)  # [B, 1, T_q, T]
        attn = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)  # [B, m, T_q, T]
        mixed = self.dropout(attn).mean(dim=1) @ v  # [B, T_q, d]: heads averaged before the value product
        return self.out(mixed), attn


class TemporalEncoder(nn.Module):
    """LSTM + causal interpretable attention with gated skip connections (TFT's temporal block).

        phi = GateAddNorm(LSTM(x), x)                 (sequence-to-sequence layer, eq. 17)
        beta = GateAddNorm(Attn(phi), phi)             (self-attention with gated skip, eq. 18)
        delta = GRN(beta)                              (position-wise feed-forward, eq. 20)
        psi = GateAddNorm(delta, phi)                  (gated skip over the attention block, eq. 21)

    Every step is causal (LSTM, masked attention, position-wise layers), so ``psi_t`` depends on
    ``x_{<=t}`` only; the sample embedding is the last step ``psi_T``.

    Args:
        hidden: C.
        lstm_layers: LSTM depth (default 1).
        heads: attention heads (default 4).
        dropout: dropout in the gates, LSTM (between layers) and attention (default 0.1).

    Shapes: x ``[B, T, C]`` -> ``[B, C]`` (``encode`` returns ``[B, T, C]`` and ``[B, m, T, T]``).
    """

    def __init__(self, hidden: int, lstm_layers: int = 1, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.lstm = nn.LSTM(hidden, hidden, lstm_layers, batch_first=True,
                            dropout=dropout if lstm_layers > 1 else 0.0)
        self.lstm_gate = GateAddNorm(hidden, dropout=dropout)
        self.attention = InterpretableMultiHeadAttention(hidden, heads, dropout)
        self.attention_gate = GateAddNorm(hidden, dropout=dropout)
        self.feed_forward = GatedResidualNetwork(hidden, hidden, dropout=dropout)
        self.output_gate = GateAddNorm(hidden, dropout=dropout)

    def encode(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step outputs ``[B, T, C]`` and attention ``[B, m, T, T]``."""
        lstm_out, _ = self.lstm(x)  # [B, T, C]
        phi = self.lstm_gate(lstm_out, x)
        attended, attn = self.attention(phi, key_mask)
        beta = self.attention_gate(attended, phi)
        return self.output_gate(self.feed_forward(beta), phi), attn

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None = None, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The last step of ``encode`` without computing the other steps after the LSTM layer: the
        attention, feed-forward and gates are position-wise given phi, so only step T is evaluated.
        Attention (on request) is the last step's over the window, ``[B, m, T]``."""
        phi = self.lstm_gate(self.lstm(x)[0], x)  # [B, T, C]
        attended, attn = self.attention(phi, key_mask, last_only=True)  # [B, 1, C], [B, m, 1, T]
        phi_last = phi[:, -1:]  # [B, 1, C]
        beta = self.attention_gate(attended, phi_last)
        last = self.output_gate(self.feed_forward(beta), phi_last).squeeze(1)  # [B, C]
        return (last, attn.squeeze(2)) if return_attention else last
