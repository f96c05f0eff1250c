"""The ``adaptive_norm`` registry (``model.adaptive_norm=<name>``): name -> constructor."""

from __future__ import annotations

from collections.abc import Callable

import torch

from atft.errors import InputError
from atft.nn.fan import FAN
from atft.nn.norm_base import AdaptiveNorm, IdentityNorm, LayerNormSlot, RevIN
from atft.nn.san import SAN


class FanSan(AdaptiveNorm):
    """The legacy FAN -> SAN stack (kept only so the comparison can be run): y = SAN(FAN(x)).

    Inverse x = FAN^-1(SAN^-1(y)); context = FAN context + SAN context.

    Args:
        fan: a ``FAN``.
        san: a ``SAN``.

    Shapes: ``[B, T, C] -> [B, T, C]``.
    """

    invertible = True

    def __init__(self, fan: FAN, san: SAN):
        super().__init__()
        self.fan, self.san = fan, san

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        z, fan_stats = self.fan.normalize(x)
        y, san_stats = self.san.normalize(z)
        return y, (fan_stats, z, san_stats)

    def inverse(self, y: torch.Tensor, stats: tuple) -> torch.Tensor:
        fan_stats, _, san_stats = stats
        return self.fan.inverse(self.san.inverse(y, san_stats), fan_stats)

    def context(self, x: torch.Tensor, stats: tuple) -> torch.Tensor:
        fan_stats, z, san_stats = stats
        return self.fan.context(x, fan_stats) + self.san.context(z, san_stats)


def _fan(hidden: int, lookback: int, cfg: dict) -> FAN:
    return FAN(hidden, lookback, top_k=int(cfg.get("fan_top_k", 4)))


def _san(hidden: int, lookback: int, cfg: dict) -> SAN:
    return SAN(hidden, lookback, slice_len=int(cfg.get("san_slice_len", 5)))


# name -> constructor(hidden C, lookback T, cfg.model.norm) -> AdaptiveNorm
NORMS: dict[str, Callable[[int, int, dict], AdaptiveNorm]] = {
    "layernorm": lambda hidden, lookback, cfg: LayerNormSlot(hidden),
    "fan": _fan,
    "san": _san,
    "fan_san": lambda hidden, lookback, cfg: FanSan(_fan(hidden, lookback, cfg), _san(hidden, lookback, cfg)),
    "revin": lambda hidden, lookback, cfg: RevIN(hidden),
    "none": lambda hidden, lookback, cfg: IdentityNorm(),
}


def build_adaptive_norm(name: str, hidden: int, lookback: int, cfg: dict | None = None) -> AdaptiveNorm:
    """The ``adaptive_norm`` module called ``name`` (one of ``NORMS``)."""
    if name not in NORMS:
        raise InputError(f"model.adaptive_norm={name!r} is not one of {sorted(NORMS)}")
    return NORMS[name](hidden, lookback, cfg or {})
