"""Newey-West (HAC) standard error of the mean of a daily series: the one SE of every evaluation table.

At horizon ``h`` consecutive daily ICs (and paired differences, quintile returns, book returns) share
``h - 1`` return days, and predictions are persistent, so the daily series is autocorrelated and
``std / sqrt(days)`` understates the standard error by about ``sqrt(h)``. Re-exported by
:mod:`atft.evaluation.metrics`; the choices are explained in docs/evaluation.md.
"""

from __future__ import annotations

import math

import numpy as np

SE_METHOD = "Newey–West HAC, Bartlett kernel"
SE_RULE = f"{SE_METHOD}, L = max(2h, floor(4 (days/100)^(2/9))) lags, fixed-b corrected"


def hac_lags(days: int, horizon: int = 1) -> int:
    """Newey-West lag count ``L = max(2h, floor(4 (days/100)^(2/9)))``, at most ``days - 1``.

    ``2h`` rather than the textbook ``h - 1``: the Bartlett kernel weights lag ``k`` by ``1 - k/(L+1)``,
    so ``L = h - 1`` recovers only ~2/3 of the long-run variance of an h-day overlap (SE ~18% short);
    ``L = 2h`` recovers ~5/6. The second term is Newey & West's (1994) rule of thumb, the floor at h = 1.
    """
    rule = math.floor(4.0 * (max(days, 0) / 100.0) ** (2.0 / 9.0))
    return int(max(0, min(max(2 * int(horizon), rule), days - 1)))


def hac_se(series: np.ndarray, horizon: int = 1, lags: int | None = None) -> float:
    """Newey-West (Bartlett kernel) standard error of the mean of a daily series, NaN-aware.

    ``lrv = g_0 + 2 sum_{k=1..L} (1 - k/(L+1)) g_k`` with ``g_k = sum_t z_t z_{t+k} / n`` of the demeaned
    series ``z``; ``se = sqrt(lrv / (n c))`` with ``c = 1 - b + b^2/3``, ``b = (L+1)/n``: the mean of
    Kiefer & Vogelsang's (2005) fixed-b limit of the Bartlett estimator, which removes the downward
    bias that estimating the mean puts into ``lrv`` when ``L`` is a visible share of ``n``.

    Gaps: a NaN day is left out of every sum (``n`` counts the finite days), but lags are counted in
    rows of the series (trading days), so two days ``k`` rows apart are lag ``k`` across a gap too
    (the amplitude-modulated estimator of Parzen 1963, Datta & Du 2019).

    Args:
        series: ``[D]`` daily values on consecutive trading days (NaN = missing).
        horizon: h of the series; sets the default lags (:func:`hac_lags`, default 1).
        lags: explicit ``L`` (overrides ``horizon``).

    Returns:
        The standard error of the mean of the finite days (NaN with fewer than 2).
    """
    x = np.asarray(series, dtype=np.float64)
    finite = np.isfinite(x)
    n = int(finite.sum())
    if n < 2:
        return math.nan
    z = np.where(finite, x - x[finite].mean(), 0.0)  # [D], a missing day contributes nothing
    lags = hac_lags(n, horizon) if lags is None else int(max(0, min(lags, len(x) - 1)))
    lrv = float(z @ z) / n
    for k in range(1, lags + 1):
        lrv += 2.0 * (1.0 - k / (lags + 1)) * float(z[k:] @ z[:-k]) / n
    b = (lags + 1) / n
    return math.sqrt(max(lrv, 0.0) / (n * (1.0 - b + b * b / 3.0)))


def se_note(horizon: int, days: int) -> str:
    """How a standard error was computed, for table footnotes: ``SE: Newey–West HAC, Bartlett kernel, 10 lags``."""
    return f"SE: {SE_METHOD}, {hac_lags(days, horizon)} lags ({horizon}d, {days} days)"


def pool_independent(estimates: list[tuple[float, float]]) -> tuple[float, float]:
    """Mean of independent estimates ``[(value, se), ...]`` (e.g. one paired difference per planted market)
    and its standard error ``sqrt(sum se^2) / n``."""
    if not estimates:
        raise ValueError("pool_independent needs at least one estimate")
    n = len(estimates)
    return sum(v for v, _ in estimates) / n, float(np.sqrt(sum(se * se for _, se in estimates))) / n
