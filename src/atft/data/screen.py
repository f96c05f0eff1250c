"""Leakage screen: refuse a feature whose mean daily IC with a forward target is implausibly high.

Fitted on the training dates only. The daily Pearson correlations of every feature with every horizon's
target come from one pass over each chunk of days: per day, the sums over the stocks where both the
feature and the target are finite, as three batched matrix products (``[F, N] @ [N, 3H]``), in float64
after a per-day shift of each feature by its mean (so raw prices or volumes lose no precision).

Shapes: ``d`` days of a chunk, ``N`` stocks, ``F`` features, ``H`` horizons.
"""

from __future__ import annotations

import numpy as np

from atft.data.dense import chunk_slices
from atft.errors import InputError

SCREEN_TEMP_FACTOR = 8  # float64 temporaries per float32 value of a chunk: chunks are this much smaller
SCREEN_MAX_DAYS = 250  # the screen's mean over at most this many training days, evenly spaced


def daily_corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cross-sectional Pearson correlation per day, feature and horizon; NaN below 3 pairs or without spread.

    Shapes: ``x [d, N, F]`` (NaN/inf = missing), ``y [d, N, H]`` -> ``[d, F, H]``.
    """
    H = y.shape[-1]
    vx = np.isfinite(x)  # [d, N, F]
    xs = x.astype(np.float64)  # [d, N, F]
    xs[~vx] = 0.0
    count = vx.sum(1)  # [d, F]
    np.subtract(xs, (xs.sum(1) / np.maximum(count, 1))[:, None, :], out=xs, where=vx)  # per-day shift
    vy = np.isfinite(y)  # [d, N, H]
    ys = np.where(vy, y, 0.0).astype(np.float64)
    ys = np.where(vy, ys - (ys.sum(1) / np.maximum(vy.sum(1), 1))[:, None, :], 0.0)  # [d, N, H]
    right = np.concatenate([vy.astype(np.float64), ys, ys * ys], axis=-1)  # [d, N, 3H]
    xt = xs.transpose(0, 2, 1)  # [d, F, N]
    x_sums = xt @ right[..., :2 * H]  # [d, F, 2H]: sum x, sum x*y over the pairs
    xx = (xs * xs).transpose(0, 2, 1) @ right[..., :H]  # [d, F, H]: sum x^2
    v_sums = vx.transpose(0, 2, 1).astype(np.float64) @ right  # [d, F, 3H]: pairs, sum y, sum y^2
    n, sx, sxy = v_sums[..., :H], x_sums[..., :H], x_sums[..., H:]
    sy, syy = v_sums[..., H:2 * H], v_sums[..., 2 * H:]
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = sxy - sx * sy / n
        var_x, var_y = xx - sx * sx / n, syy - sy * sy / n
        corr = cov / np.sqrt(var_x * var_y)
    ok = (n >= 3) & (var_x > 1e-12 * np.maximum(xx, 1e-300)) & (var_y > 1e-12 * np.maximum(syy, 1e-300))
    return np.where(ok, np.clip(corr, -1.0, 1.0), np.nan)


def daily_ic(X: np.ndarray, Y: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Mean over ``days`` of the daily IC, one chunk of days at a time. ``X [D, N, F]``, ``Y [D, N, H]`` -> ``[F, H]``."""
    days = np.asarray(days)
    corr = np.concatenate([daily_corr(X[days[c]], Y[days[c]])
                           for c in chunk_slices(len(days), X[0].nbytes * SCREEN_TEMP_FACTOR)])  # [d, F, H]
    with np.errstate(invalid="ignore"), np.testing.suppress_warnings() as sup:
        sup.filter(RuntimeWarning)
        return np.nanmean(corr, axis=0)


def leakage_screen(X: np.ndarray, Y: np.ndarray, names: list[str], horizons: list[int], days: np.ndarray,
                   max_abs_ic: float) -> None:
    """Refuse any feature whose |mean daily IC| with a forward target exceeds ``max_abs_ic``.

    The mean is over at most ``SCREEN_MAX_DAYS`` of ``days``, evenly spaced: a leaked feature has a daily
    IC near 1 on every day, far beyond the threshold, and 250 days pin the mean to within ~0.01 (the
    standard error of one day's IC over N stocks is ~1/sqrt(N)), so more days only cost time.
    """
    if max_abs_ic is None or max_abs_ic <= 0 or len(days) == 0:
        return
    days = np.asarray(days)
    if len(days) > SCREEN_MAX_DAYS:
        days = days[np.linspace(0, len(days) - 1, SCREEN_MAX_DAYS).round().astype(np.int64)]
    ic = daily_ic(X, Y, days)  # [F, H]
    for k, h in enumerate(horizons):
        bad = np.flatnonzero(np.abs(np.nan_to_num(ic[:, k])) > max_abs_ic)
        if len(bad):
            f = int(bad[np.argmax(np.abs(ic[bad, k]))])
            raise InputError(f"feature {names[f]!r} has mean daily IC {ic[f, k]:+.3f} with target_{h}d on the "
                             f"training dates (> data.features.leakage_screen_max_abs_ic={max_abs_ic}); it "
                             f"looks derived from the future - exclude it via data.features.exclude")
