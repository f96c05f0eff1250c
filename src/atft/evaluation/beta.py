"""Market-beta-neutral next-day returns, so a book that merely holds low-beta stocks in a falling
market is not mistaken for stock selection.

The market is the equal-weight mean of the valid stocks' next-day returns. A stock's beta for the
position formed at the close of day ``t`` is the OLS slope of its next-day returns on the market's
over the ``window`` days ``t-window .. t-1`` — returns that are all realised by the close of ``t`` —
so no day's beta uses its own or any later return. The neutral return is
``r[t, n] - beta[t, n] * market[t]``.
"""

from __future__ import annotations

import numpy as np


def market_returns(returns_1d: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Equal-weight mean of the valid finite returns of each day (NaN if none). # [D]"""
    r = np.asarray(returns_1d, dtype=np.float64)
    ok = np.isfinite(r) if valid is None else (np.isfinite(r) & valid)
    count = ok.sum(axis=1)
    total = np.where(ok, r, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _trailing_sum(x: np.ndarray, window: int) -> np.ndarray:
    """Sum over days ``t-window .. t-1`` (strictly before t), along axis 0. # [D, N]"""
    csum = np.cumsum(np.vstack([np.zeros_like(x[:1]), x]), axis=0)  # [D+1, N]; csum[t] = sum of x[:t]
    start = np.maximum(np.arange(x.shape[0]) - window, 0)
    return csum[:-1] - csum[start]


def rolling_beta(returns_1d: np.ndarray, valid: np.ndarray | None = None, window: int = 60,
                 min_obs: int = 20) -> np.ndarray:
    """Beta of each stock to the equal-weight market from the ``window`` days before each day.

    Args:
        returns_1d: ``[D, N]`` next-day returns (``target_1d``).
        valid: ``[D, N]`` bool, stocks in the universe (default: finite return).
        window: days of history (default 60); min_obs: fewer joint observations -> beta 1 (default 20).

    Returns:
        ``[D, N]`` beta; 1.0 where there is not enough history (the market's own beta).
    """
    r = np.asarray(returns_1d, dtype=np.float64)
    ok = np.isfinite(r) if valid is None else (np.isfinite(r) & valid)
    mkt = market_returns(r, ok)  # [D]
    ok &= np.isfinite(mkt)[:, None]
    x = np.where(ok, mkt[:, None], 0.0)  # [D, N] market return where the stock is observed
    y = np.where(ok, r, 0.0)
    n = _trailing_sum(ok.astype(np.float64), window)
    sx, sy = _trailing_sum(x, window), _trailing_sum(y, window)
    sxx, sxy = _trailing_sum(x * x, window), _trailing_sum(x * y, window)
    var = sxx - sx * sx / np.maximum(n, 1)
    cov = sxy - sx * sy / np.maximum(n, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        beta = cov / var
    enough = (n >= min_obs) & (var > 1e-16)
    return np.where(enough, beta, 1.0)


def beta_neutral_returns(returns_1d: np.ndarray, valid: np.ndarray | None = None, window: int = 60,
                         min_obs: int = 20) -> np.ndarray:
    """Next-day returns minus beta times the market's next-day return. # [D, N]"""
    r = np.asarray(returns_1d, dtype=np.float64)
    beta = rolling_beta(r, valid, window, min_obs)
    return r - beta * market_returns(r, valid)[:, None]
