"""Cross-sectional training targets: each day's forward returns normalised across that day's stocks.

A cross-sectional ranking model is judged within each day, so the market-wide part of a day's returns
(the same for every stock) carries no information for it, yet it dominates a loss on raw returns: a
day on which the market fell 3% contributes far more squared error than a quiet day, whatever the
ranking. The training loss therefore sees, per day ``d`` and horizon ``h`` (``train.loss.target_norm``):

- ``zscore`` (default; Qlib's ``CSZScoreNorm`` label convention, with winsorising first):
  ``z = (y - median_d) / (1.4826 MAD_d)`` clipped to ``+-winsorize_sigma``, then re-standardised to
  mean 0 and unit (population) std over the day's valid stocks. The clip keeps one takeover or
  earnings jump from setting the day's scale.
- ``rank_gauss``: ``Phi^-1((rank - 0.5) / n)`` of the day's average ranks (ties share a rank), then
  scaled to unit std. Bounded by construction and insensitive to outliers.
- ``none``: the raw return divided by one global scale, the std of the training targets (so a Huber
  ``delta`` keeps its meaning); the market's daily level stays in the target.

Metrics are always computed on the raw ``target_{h}d``; only the loss sees these. The statistics are
per day over every valid stock of that day, so they use no other day's data (no leakage across time).
Shapes: ``Y [D, N, H]``, ``mask [D, N, H]`` (bool) -> ``[D, N, H]`` float32, 0 where masked.
"""

from __future__ import annotations

import numba
import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata

TARGET_NORMS = ("zscore", "rank_gauss", "none")
MAD_TO_STD = 1.4826  # MAD of a standard normal


def standardise_rows(z: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean 0, unit population std over the valid entries of each row; 0 elsewhere. ``[R, N]``."""
    n = np.maximum(valid.sum(1, keepdims=True), 1)
    zv = np.where(valid, z, 0.0)
    mean = zv.sum(1, keepdims=True) / n
    var = np.where(valid, (zv - mean) ** 2, 0.0).sum(1, keepdims=True) / n
    out = (zv - mean) / np.sqrt(np.maximum(var, 1e-24))
    return np.where(valid & (var > 1e-24), out, 0.0)


def _winsorised_zscore(y: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Robust z (median / MAD) clipped at ``+-sigma``, re-standardised. ``[R, N]``."""
    med, mad, std = _row_scales(y, valid)  # [R] each (compiled: numpy's nanmedian sorts every row twice)
    mad *= MAD_TO_STD
    scale = np.where(mad > 1e-12, mad, np.where(std > 1e-12, std, 1.0))[:, None]  # a day of mostly-equal returns
    z = np.clip((np.where(valid, y, 0.0) - med[:, None]) / scale, -sigma, sigma)
    return standardise_rows(z, valid)


@numba.njit(nogil=True, cache=True)
def _row_scales(y, valid):  # pragma: no cover - compiled
    """Median, median absolute deviation and population std of each row's valid entries ``[R]`` each;
    a row without any: median 0, MAD and std NaN (the caller's scale then falls back to 1)."""
    R, N = y.shape
    med, mad, std = np.zeros(R), np.full(R, np.nan), np.full(R, np.nan)
    buf = np.empty(N)
    for i in range(R):
        n = 0
        for j in range(N):
            if valid[i, j]:
                buf[n] = y[i, j]
                n += 1
        if n == 0:
            continue
        v = buf[:n]
        med[i] = np.median(v)
        std[i] = np.std(v)
        mad[i] = np.median(np.abs(v - med[i]))
    return med, mad, std


def _rank_gauss(y: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``Phi^-1((rank - 0.5) / n)`` within each row, unit std. ``[R, N]``."""
    filled = np.where(valid, y, np.inf)  # invalid entries rank above every valid one
    ranks = rankdata(filled, method="average", axis=1)  # [R, N]
    n = np.maximum(valid.sum(1, keepdims=True), 1)
    g = ndtri(np.clip((ranks - 0.5) / n, 1e-6, 1 - 1e-6))
    return standardise_rows(np.where(valid, g, 0.0), valid)


def cross_sectional_targets(Y: np.ndarray, mask: np.ndarray, method: str = "zscore",
                            winsorize_sigma: float = 3.0, scale_days: np.ndarray | None = None) -> np.ndarray:
    """Per-day normalised targets (module docstring).

    Args:
        Y: ``[D, N, H]`` raw forward returns (NaN where unknown).
        mask: ``[D, N, H]`` bool, the targets that exist.
        method: one of ``TARGET_NORMS``.
        winsorize_sigma: clip of the robust z (``zscore`` only; default 3).
        scale_days: days whose targets set the global scale of ``none`` (the training days); None -> all.

    Returns:
        ``[D, N, H]`` float32, 0 where ``mask`` is False. A day with fewer than two targets is all 0.
    """
    if method not in TARGET_NORMS:
        raise ValueError(f"train.loss.target_norm={method!r}: expected one of {', '.join(TARGET_NORMS)}")
    valid = np.asarray(mask, bool) & np.isfinite(Y)
    out = np.zeros(Y.shape, dtype=np.float32)
    for k in range(Y.shape[2]):  # loop over horizons (<= 4); each is vectorised over days and stocks
        y, v = Y[..., k].astype(np.float64), valid[..., k]  # [D, N]
        v = v & (v.sum(1, keepdims=True) >= 2)
        if method == "none":
            days = slice(None) if scale_days is None else np.asarray(scale_days)
            sample = y[days][v[days]]
            scale = float(np.std(sample)) if sample.size > 1 else 1.0
            out[..., k] = np.where(v, y / max(scale, 1e-12), 0.0)
        elif method == "rank_gauss":
            out[..., k] = _rank_gauss(y, v)
        else:
            out[..., k] = _winsorised_zscore(y, v, float(winsorize_sigma))
    return out
