"""ATFT-GAT-FAN assembled from config (reads top to bottom: builders, the model, the summary).

    x [B,T,F] -> variable_selection -> [B,T,F*d_e] -> backbone_projection -> projected_features [B,T,C]
      -> adaptive_norm -> normalized_features [B,T,C] (+ context [B,C] for instance norms)
      -> temporal_encoder -> temporal_embedding [B,C] -> gat (day graph) -> graph_embedding [B,C]
      -> fusion (gated residual) (+ context) -> prediction_head -> deep [B,H] / [B,H,Q]
    x[:, -1] [B,F] -> linear_path -> [B,H]; predictions = linear + deep (the deep model learns the residual)
    x[:, -1] [B,F] -> interaction_path (gated low-rank products) -> [B,H], added beside them

Shape letters: B samples, T lookback, F features, C hidden, H horizons, Q quantiles, E edges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import torch
from torch import nn

from atft.config import cfg_get
from atft.errors import InputError
from atft.nn.gat import GraphAttentionBlock, GraphPassThrough
from atft.nn.heads import GatedFusion, MultiHorizonHead
from atft.nn.norm_base import AdaptiveNorm
from atft.nn.normalization import build_adaptive_norm
from atft.nn.temporal import TemporalEncoder
from atft.nn.variable_selection import VariableSelectionNetwork

AUTO_CHECKPOINT_SAMPLES = 500  # model.checkpoint_samples=auto: chunk size when it is on
AUTO_CHECKPOINT_BYTES = 128 << 20  # ... on for batches whose [F, B*T, d_e] float32 embeddings reach this

MODULE_NAMES = (
    "variable_selection", "backbone_projection", "adaptive_norm", "temporal_encoder", "gat",
    "fusion", "prediction_head", "linear_path", "peer_path", "interaction_path",
)


class LinearPath(nn.Module):
    """A linear map from the last day's features to each horizon: ``l = x[:, -1] W + b``.

    The model's output is ``l + deep(x)``, so at ``deep = 0`` ATFT is exactly a linear cross-sectional
    model, and with ``W`` warm-started at the ridge solution on the training days (``set_weights``,
    called by ``atft train``) the deep model starts from the linear fit and learns its residual.

    Args:
        n_features: F.  n_horizons: H.

    Shapes: x ``[B, T, F]`` -> ``[B, H]``.
    """

    def __init__(self, n_features: int, n_horizons: int):
        super().__init__()
        self.linear = nn.Linear(n_features, n_horizons)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @torch.no_grad()
    def set_weights(self, weight, bias) -> None:
        """``weight [F, H]``, ``bias [H]`` (e.g. the ridge fit of ``atft.training.linear_init``)."""
        self.linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).T)
        self.linear.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x[:, -1])  # [B, H]


class PeerPath(LinearPath):
    """A linear map from the mean of the day-graph neighbours' last-day features to each horizon:
    ``p_i = mean_{j in N(i), j != i} x_j[-1] V + c``, the linear form of a peer (lead-lag) signal.

    Graph attention can express it too, but through the temporal encoder and a gate; this path gives
    the linear part of "what my peers did yesterday" a direct route, as the linear path does for a
    stock's own features. Warm-started with the linear path (``set_weights``: the peer block of the
    ridge fit on the training days, ``atft.training.linear_init``), else zero. A stock without
    neighbours (or a batch without a graph) contributes 0.

    Args:
        n_features: F.  n_horizons: H.

    Shapes: x ``[B, T, F]``, edge_index ``[2, E]`` -> ``[B, H]``.
    """

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor | None) -> torch.Tensor:
        return self.linear(neighbour_mean(x[:, -1], edge_index))  # [B, H]


def neighbour_mean(last: torch.Tensor, edge_index: torch.Tensor | None) -> torch.Tensor:
    """Mean of each node's graph neighbours' rows, self-loops excluded; 0 without neighbours.

    Shapes: last ``[B, F]``, edge_index ``[2, E]`` (messages ``src -> dst``) -> ``[B, F]``.
    """
    if edge_index is None or edge_index.numel() == 0:
        return torch.zeros_like(last)
    src, dst = edge_index
    keep = (src != dst).to(last.dtype)[:, None]  # [E, 1] self-loops carry no peer information
    total = torch.zeros_like(last).index_add(0, dst, last[src] * keep)  # [B, F]
    count = torch.zeros(last.shape[0], 1, dtype=last.dtype, device=last.device).index_add(0, dst, keep)
    return total / count.clamp_min(1.0)  # [B, F]


class InteractionPath(nn.Module):
    """Gated low-rank products of the last day's features: ``i = (tanh(x A + a) * (x B)) W + c``.

    An MLP represents a product such as "yesterday's return, signed by yesterday's volume state" only
    through many saturating units and learns it slowly from noisy daily cross-sections; this path gives
    pairwise (and gated) interactions of the last day's features a direct route, the way the linear path
    does for their linear part (cf. factorisation machines and multiplicative interactions). Near 0,
    ``tanh(x A) * (x B) ~ (x A)(x B)``, a rank-R bilinear form; away from 0 the gate saturates, so one
    feature switching another on or off (a regime) is expressible too. ``W`` and ``c`` start at zero: the
    path starts silent and the starting model stays the warm-started linear one.

    Args:
        n_features: F.  n_horizons: H.  rank: R (default 16).

    Shapes: x ``[B, T, F]`` -> ``[B, H]``.
    """

    def __init__(self, n_features: int, n_horizons: int, rank: int = 16):
        super().__init__()
        self.gate = nn.Linear(n_features, rank)
        self.value = nn.Linear(n_features, rank, bias=False)
        self.out = nn.Linear(rank, n_horizons)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = x[:, -1]  # [B, F]
        return self.out(torch.tanh(self.gate(last)) * self.value(last))  # [B, R] -> [B, H]


class NoPath(nn.Module):
    """The absent linear path (``model.linear_path.enabled=false``): contributes 0."""

    def forward(self, x: torch.Tensor, *_) -> torch.Tensor:
        return x.new_zeros(())


class ATFT_GAT_FAN(nn.Module):
    """Adaptive TFT encoder + GAT over the day graph + multi-horizon head.

    Args:
        n_features: F.
        horizons: the H target horizons in days (labels only; the head has one MLP per horizon).
        hidden: C (default 64).
        vsn_embed_dim: per-variable embedding width d_e (default 8).
        adaptive_norm: the normalisation slot (``atft.nn.normalization.NORMS``).
        temporal_encoder: ``TemporalEncoder``.
        gat: ``GraphAttentionBlock`` or ``GraphPassThrough`` (``model.gat.enabled=false``).
        quantiles: optional quantile levels (Q); None -> point forecasts.
        dropout: dropout in the selection, fusion and head (default 0.1).
        linear_path: ``LinearPath`` (added to the deep output) or ``NoPath``.
        peer_path: ``PeerPath`` (added too) or ``NoPath``.
        interaction_path: ``InteractionPath`` (added too) or ``NoPath``.
        deep: False switches the deep branch off: predictions are the linear path alone (ablation).
        deep_init_scale: multiplier on the head's last layer at initialisation (default 1.0); below 1
            the deep branch starts close to 0, so a warm-started linear path is the starting model.
        feature_dropout: share of input variables hidden from the deep branch per training sample (their
            whole history set to 0, the scaled median; default 0). The side paths read every variable.
        checkpoint_samples: > 0: activation checkpointing of the per-sample encoder in chunks of this
            many samples while training (``_encode_in_chunks``); 0 off; ``"auto"`` (the config's default):
            chunks of ``AUTO_CHECKPOINT_SAMPLES`` on the CPU for a batch whose per-variable embeddings
            ``[F, B*T, d_e]`` reach ``AUTO_CHECKPOINT_BYTES`` (a 4,000-stock day at T=20, F=73), else off.
        vsn_fused: the variable selection's embeddings in compiled CPU kernels where they apply
            (``VariableSelectionNetwork``'s ``fused``; default True).

    Shapes: see ``forward``.
    """

    def __init__(
        self,
        n_features: int,
        horizons: Sequence[int],
        hidden: int,
        vsn_embed_dim: int,
        adaptive_norm: AdaptiveNorm,
        temporal_encoder: nn.Module,
        gat: nn.Module,
        quantiles: Sequence[float] | None = None,
        dropout: float = 0.1,
        linear_path: nn.Module | None = None,
        peer_path: nn.Module | None = None,
        interaction_path: nn.Module | None = None,
        deep: bool = True,
        deep_init_scale: float = 1.0,
        checkpoint_samples: int | str = 0,
        feature_dropout: float = 0.0,
        vsn_fused: bool = True,
    ):
        super().__init__()
        if not 0.0 <= feature_dropout < 1.0:
            raise InputError(f"model.feature_dropout must lie in [0, 1), got {feature_dropout}")
        self.feature_dropout = float(feature_dropout)
        self.n_features, self.hidden = n_features, hidden
        self.horizons = [int(h) for h in horizons]
        self.quantiles = [float(q) for q in quantiles] if quantiles else None
        self.variable_selection = VariableSelectionNetwork(n_features, vsn_embed_dim, hidden, dropout, vsn_fused)
        self.backbone_projection = nn.Linear(n_features * vsn_embed_dim, hidden)
        self.adaptive_norm = adaptive_norm
        self.temporal_encoder = temporal_encoder
        self.gat = gat
        self.fusion = GatedFusion(hidden, dropout)
        n_out = len(self.quantiles) if self.quantiles else 1
        self.prediction_head = MultiHorizonHead(hidden, len(self.horizons), n_out, dropout=dropout)
        with torch.no_grad():
            self.prediction_head.w2.mul_(deep_init_scale)
            self.prediction_head.b2.mul_(deep_init_scale)
        self.linear_path = linear_path if linear_path is not None else NoPath()
        self.peer_path = peer_path if peer_path is not None else NoPath()
        self.interaction_path = interaction_path if interaction_path is not None else NoPath()
        self.deep = bool(deep)
        self.checkpoint_samples = _checkpoint_samples(checkpoint_samples)  # -1: auto
        # the point forecast of a quantile head is its level closest to the median
        self.median_index = 0 if not self.quantiles else min(
            range(n_out), key=lambda i: abs(self.quantiles[i] - 0.5))

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor | None = None,
        edge_attr: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """x ``[B, T, F]``; edge_index ``[2, E]`` into 0..B-1 (None: self-loops only); edge_attr ``[E, 3]``;
        mask ``[B, T]`` bool, True where the step is valid (None: all valid; invalid steps are zeroed
        and hidden from attention).

        Returns ``predictions [B, H]``, ``deep_predictions [B, H]`` (the deep branch without the linear
        path), ``quantiles [B, H, Q]`` (quantile heads only),
        ``projected_features`` / ``normalized_features [B, T, C]``, ``feature_weights [B, F]``,
        ``temporal_embedding`` / ``graph_embedding [B, C]``.
        """
        if mask is not None:
            if mask.shape != x.shape[:2]:
                raise ValueError(f"mask must be [B, T] = {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
            x = x * mask.unsqueeze(-1).to(x.dtype)
        linear = self.linear_path(x) + self.peer_path(x, edge_index)  # [B, H] (or a scalar 0 without paths)
        if self.deep:  # the interaction path belongs to the learned part; deep=false is the linear model alone
            linear = linear + self.interaction_path(x)
        if not self.deep:
            return self._linear_only(x, linear)
        weights, projected, normalized, context, temporal = self._encode_in_chunks(self._drop_features(x), mask)
        graph = self.gat(temporal, edge_index, edge_attr)  # [B, C]
        fused = self.fusion(temporal, graph)  # [B, C]
        if context is not None:
            fused = fused + context  # what the instance norm removed, fed forward (docs/model.md)
        deep = self.prediction_head(fused)  # [B, H, Q]
        out = deep + linear[..., None]  # [B, H, Q]
        result = {
            "predictions": out[..., self.median_index],  # [B, H]
            "deep_predictions": deep[..., self.median_index],  # [B, H] the deep branch alone
            "projected_features": projected,
            "normalized_features": normalized,
            "feature_weights": weights,  # [B, F]
            "temporal_embedding": temporal,
            "graph_embedding": graph,
        }
        if self.quantiles:
            result["quantiles"] = out
        return result

    def _encode(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """The per-sample part of the forward pass (no sample sees another before the GAT).

        Returns feature weights ``[B, F]`` (mean over T), projected / normalized features ``[B, T, C]``,
        the instance norm's context ``[B, C]`` (zeros ``[B, 0]`` without one) and the temporal embedding ``[B, C]``.
        """
        selected, weights = self.variable_selection(x)  # [B, T, F*d_e], [B, T, F]
        projected = self.backbone_projection(selected)  # [B, T, C]
        normalized, context = self.adaptive_norm(projected)  # [B, T, C], [B, C] | None
        temporal = self.temporal_encoder(normalized, mask)  # [B, C]
        if context is None:
            context = temporal.new_zeros(temporal.shape[0], 0)
        return weights.mean(dim=1), projected, normalized, context, temporal

    def _encode_in_chunks(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """``_encode``, with activation checkpointing over chunks of ``checkpoint_samples`` samples while
        gradients are on: the forward keeps only each chunk's outputs, and the backward recomputes one
        chunk's activations at a time (the variable selection's ``[F, B*T, d_e]`` tensors dominate a
        training step's memory on a 4,000-stock day). Same values and gradients; about one extra forward
        pass of the encoder in time. Without gradients the chunks run one after the other (no recompute):
        a whole day's forward pass then never holds more than one chunk's temporaries."""
        chunk = self._checkpoint_chunk(x)
        if chunk <= 0 or x.shape[0] <= chunk:
            out = self._encode(x, mask)
        else:
            from torch.utils.checkpoint import checkpoint

            run = partial(checkpoint, self._encode, use_reentrant=False) if torch.is_grad_enabled() else self._encode
            parts = [run(x[i:i + chunk], None if mask is None else mask[i:i + chunk])
                     for i in range(0, x.shape[0], chunk)]
            out = tuple(torch.cat(p, dim=0) for p in zip(*parts, strict=True))
        weights, projected, normalized, context, temporal = out
        return weights, projected, normalized, (context if context.shape[-1] else None), temporal

    def _drop_features(self, x: torch.Tensor) -> torch.Tensor:
        """While training, each sample's variables hidden with probability ``feature_dropout`` (all T steps
        of a hidden variable set to 0); the identity otherwise. ``[B, T, F] -> [B, T, F]``."""
        if not self.training or self.feature_dropout <= 0.0:
            return x
        keep = torch.rand(x.shape[0], 1, x.shape[2], device=x.device) >= self.feature_dropout  # [B, 1, F]
        return x * keep.to(x.dtype)

    def _checkpoint_chunk(self, x: torch.Tensor) -> int:
        """Samples per encoder chunk for this batch (0: the whole batch); ``checkpoint_samples`` or its ``auto``."""
        if self.checkpoint_samples >= 0:
            return self.checkpoint_samples
        B, T, F = x.shape
        big = B * T * F * self.variable_selection.embed_dim * 4 >= AUTO_CHECKPOINT_BYTES
        return AUTO_CHECKPOINT_SAMPLES if big and x.device.type == "cpu" else 0

    def _linear_only(self, x: torch.Tensor, linear: torch.Tensor) -> dict[str, torch.Tensor]:
        """The outputs of ``forward`` with the deep branch off: the linear path, uniform feature weights."""
        B, _, F = x.shape
        out = linear.expand(B, len(self.horizons))[..., None].expand(-1, -1, len(self.quantiles or [0]))
        result = {"predictions": out[..., self.median_index],
                  "feature_weights": x.new_full((B, F), 1.0 / F)}  # [B, H], [B, F]
        if self.quantiles:
            result["quantiles"] = out
        return result


def build_model(model_cfg: Mapping, n_features: int, horizons: Sequence[int]) -> ATFT_GAT_FAN:
    """``ATFT_GAT_FAN`` from ``cfg.model``; ``horizons`` wins over ``model_cfg.horizons``."""
    horizons = list(horizons or cfg_get(model_cfg, "horizons", []))
    if n_features < 1 or not horizons:
        raise InputError(f"model needs n_features >= 1 and at least one horizon, got {n_features}, {horizons}")
    hidden = int(cfg_get(model_cfg, "hidden_size", 64))
    dropout = float(cfg_get(model_cfg, "dropout", 0.1))
    lookback = cfg_get(model_cfg, "lookback", 20)
    if isinstance(lookback, str):  # an interpolation that lost its root config, e.g. a saved container
        raise InputError(f"model.lookback={lookback!r} is unresolved; pass cfg.model of the full config or an int")
    lookback = int(lookback)
    temporal_cfg, gat_cfg = cfg_get(model_cfg, "temporal", {}), cfg_get(model_cfg, "gat", {})
    norm = build_adaptive_norm(str(cfg_get(model_cfg, "adaptive_norm", "layernorm")), hidden, lookback,
                               cfg_get(model_cfg, "norm", {}))
    encoder = TemporalEncoder(hidden, int(cfg_get(temporal_cfg, "lstm_layers", 1)),
                              int(cfg_get(temporal_cfg, "attention_heads", 4)), dropout)
    if bool(cfg_get(gat_cfg, "enabled", True)):
        gat = GraphAttentionBlock(hidden, int(cfg_get(gat_cfg, "layers", 2)), int(cfg_get(gat_cfg, "heads", 4)),
                                  float(cfg_get(gat_cfg, "dropout", dropout)))
    else:
        gat = GraphPassThrough()
    quantiles = cfg_get(model_cfg, "quantiles", None)
    if quantiles is not None:
        quantiles = sorted(float(q) for q in quantiles)
        if not all(0.0 < q < 1.0 for q in quantiles):
            raise InputError(f"model.quantiles must lie in (0, 1), got {quantiles}")
    lin_cfg = cfg_get(model_cfg, "linear_path", {})
    linear = LinearPath(n_features, len(horizons)) if bool(cfg_get(lin_cfg, "enabled", False)) else None
    if linear is not None and not bool(cfg_get(lin_cfg, "trainable", True)):
        linear.requires_grad_(False)  # stays at its warm start; only the deep branch trains
    peers = PeerPath(n_features, len(horizons)) if bool(cfg_get(lin_cfg, "peers", False)) else None
    inter_cfg = cfg_get(model_cfg, "interaction_path", {})  # absent (older configs): off
    interaction = (InteractionPath(n_features, len(horizons), int(cfg_get(inter_cfg, "rank", 16)))
                   if bool(cfg_get(inter_cfg, "enabled", False)) else None)
    deep = bool(cfg_get(model_cfg, "deep", True))
    if not deep and linear is None:
        raise InputError("model.deep=false needs model.linear_path.enabled=true (nothing would predict)")
    return ATFT_GAT_FAN(n_features, horizons, hidden, int(cfg_get(model_cfg, "vsn_embed_dim", 8)), norm,
                        encoder, gat, quantiles, dropout, linear, peers, interaction, deep,
                        float(cfg_get(lin_cfg, "deep_init_scale", 1.0)) if linear is not None else 1.0,
                        cfg_get(model_cfg, "checkpoint_samples", 0), float(cfg_get(model_cfg, "feature_dropout", 0.0)),
                        bool(cfg_get(model_cfg, "vsn_fused", True)))


def _checkpoint_samples(value) -> int:
    """``model.checkpoint_samples``: an int >= 0, or ``auto`` (-1)."""
    if str(value).lower() == "auto":
        return -1
    try:
        n = int(value or 0)
    except (TypeError, ValueError):
        n = -1
    if n < 0:
        raise InputError(f"model.checkpoint_samples={value!r}: expected auto or a number of samples >= 0")
    return n


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def model_summary(cfg: Mapping, n_features: int) -> str:
    """Parameter count and one line per module, for ``atft model summary``."""
    data_cfg = cfg_get(cfg, "data", {})
    horizons = (cfg_get(cfg.model, "horizons", None) or cfg_get(data_cfg, "horizons", None)
                or cfg_get(cfg_get(data_cfg, "build", {}), "horizons", [1, 5, 10, 20]))
    model = build_model(cfg.model, n_features, list(horizons))
    lines = [
        f"ATFT_GAT_FAN  F={n_features}  C={model.hidden}  horizons={model.horizons}  "
        f"adaptive_norm={cfg_get(cfg.model, 'adaptive_norm', 'layernorm')}  quantiles={model.quantiles}",
        f"{'module':<22}{'class':<34}{'params':>10}",
    ]
    for name in MODULE_NAMES:
        module = getattr(model, name)
        lines.append(f"{name:<22}{type(module).__name__:<34}{_count(module):>10,}")
    lines.append(f"{'total':<56}{_count(model):>10,}")
    return "\n".join(lines)
