"""The metric definitions of DESIGN.md, implemented once; every number in a log, JSON file or report
comes from here.

Arrays are dense day x stock: ``pred [D, N]``, ``target [D, N]``, ``mask [D, N]`` (bool). A value
takes part only where ``mask`` is true AND it is finite, so NaN targets count as missing.

Conventions (see docs/evaluation.md):

- IC / RankIC: Pearson / Spearman correlation within each day; days with fewer than ``min_stocks``
  valid stocks, or a constant target, are NaN and left out of every summary. A constant prediction
  carries no ranking information and scores exactly 0 (not NaN), so a collapsed model reads as
  IC 0 rather than silently dropping the day.
- Long-short book: the position formed from the prediction of day ``t`` is entered ``lag`` days
  later, at the close of ``t + lag``, and earns ``returns_1d[t + lag] = Close(t+lag+1)/Close(t+lag) - 1``.
  ``lag = 1`` (the default, :data:`TRADEABLE_LAG`) is what can be traded: the close of ``t`` produced
  the features, so nobody can trade at it. ``lag = 0`` is the research convention, labelled "not
  tradeable" wherever it is shown. The days before the first lagged signal are not part of the book.
  IC and RankIC stay against ``target_{h}d`` (from the close of ``t``). Long leg weights sum to +1, short
  leg weights to -1 (gross exposure 2, net 0). For horizon ``h > 1`` there are ``h`` staggered
  sub-books; sub-book ``j`` rebalances on days with ``t % h == j`` and holds ``h`` days; the portfolio
  weight is the mean of the sub-books' weights, so its daily return is the mean of theirs and daily
  returns never overlap. Weights are held at their targets between rebalances (no price drift).
- Turnover on day ``t`` is ``sum_n |W_t[n] - W_{t-1}[n]|`` (starting from a flat book, so the first
  day pays for building it); net return = gross - turnover * cost_bps / 1e4 (cost per unit traded).
- The standard error of every mean of a daily series (IC, RankIC, paired differences, quintile
  returns, long-short returns, the Sharpe ratio) is Newey-West HAC (:func:`hac_se`): at horizon
  ``h`` consecutive days share ``h - 1`` return days, and ``std / sqrt(days)`` is ~sqrt(h) too small.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

from atft.errors import InputError
from atft.evaluation.hac import SE_METHOD, SE_RULE, hac_lags, hac_se, se_note  # noqa: F401  (one import for callers)

TRADING_DAYS = 252
MIN_STOCKS = 5
TRADEABLE_LAG = 1  # days from the close that produced a signal to the close it is traded at


def _valid(mask: np.ndarray | None, *arrays: np.ndarray) -> np.ndarray:
    """Joint validity: mask (or all-true) and every array finite. # [D, N]"""
    valid = np.ones(arrays[0].shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).copy()
    for arr in arrays:
        valid &= np.isfinite(arr)
    return valid


def _pearson_rows(x: np.ndarray, y: np.ndarray, valid: np.ndarray, min_stocks: int) -> np.ndarray:
    """Row-wise Pearson correlation over the valid entries of each row. # [D]"""
    x = np.where(valid, x, 0.0).astype(np.float64)
    y = np.where(valid, y, 0.0).astype(np.float64)
    n = valid.sum(axis=1)  # [D]
    safe_n = np.maximum(n, 1)[:, None]
    dx = np.where(valid, x - x.sum(axis=1, keepdims=True) / safe_n, 0.0)  # [D, N]
    dy = np.where(valid, y - y.sum(axis=1, keepdims=True) / safe_n, 0.0)  # [D, N]
    cov = (dx * dy).sum(axis=1)
    vx = (dx * dx).sum(axis=1)
    vy = (dy * dy).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ic = cov / np.sqrt(vx * vy)
    ic = np.where(vx <= 0.0, 0.0, ic)  # constant prediction: no information, IC 0
    ic = np.where((n < max(min_stocks, 2)) | (vy <= 0.0), np.nan, ic)
    return np.clip(ic, -1.0, 1.0)


def daily_ic(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None,
             min_stocks: int = MIN_STOCKS) -> np.ndarray:
    """Pearson IC of each day.

    Args:
        pred, target: ``[D, N]`` prediction and realised target.
        mask: ``[D, N]`` bool, default all valid; non-finite values are invalid too.
        min_stocks: days with fewer valid stocks are NaN (default 5).

    Returns:
        ``[D]`` float64, NaN where undefined.
    """
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    return _pearson_rows(pred, target, _valid(mask, pred, target), min_stocks)


def within_day_ranks(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Average ranks 1..n_valid within each day (ties share their mean rank); NaN where invalid. # [D, N]"""
    filled = np.where(valid, values, np.inf)  # invalid entries rank above every valid one
    ranks = rankdata(filled, method="average", axis=1)
    return np.where(valid, ranks, np.nan)


def daily_rank_ic(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None,
                  min_stocks: int = MIN_STOCKS) -> np.ndarray:
    """Spearman RankIC of each day: Pearson correlation of within-day average ranks.

    Same Args and Returns as :func:`daily_ic`.
    """
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    valid = _valid(mask, pred, target)
    return _pearson_rows(within_day_ranks(pred, valid), within_day_ranks(target, valid), valid, min_stocks)


def ic_summary(daily: np.ndarray, horizon: int = 1) -> dict[str, float]:
    """Mean, std, ICIR = mean/std, HAC ``se`` (:func:`hac_se` at ``horizon``), ``tstat = mean/se``,
    ``days`` (the finite days) and ``lags`` (the HAC lag count) of a daily series."""
    x = np.asarray(daily, dtype=np.float64)
    finite = x[np.isfinite(x)]
    days = int(finite.size)
    mean = float(finite.mean()) if days else math.nan
    std = float(finite.std(ddof=1)) if days > 1 else math.nan
    icir = mean / std if days > 1 and std > 0 else math.nan
    se = hac_se(x, horizon)
    return {"mean": mean, "std": std, "icir": icir, "tstat": mean / se if days > 1 and se > 0 else math.nan,
            "days": days, "se": se, "lags": hac_lags(days, horizon)}


# ----------------------------------------------------------------------------------------- books


def quantile_weights(pred: np.ndarray, valid: np.ndarray, quantile: float = 0.2) -> np.ndarray:
    """One-day long-short weights: +1/n_long on the top ``quantile``, -1/n_short on the bottom.

    With ``n`` valid stocks, ``k = max(1, floor(quantile * n))``; long = average rank > n - k,
    short = average rank < k + 1, so a tied group straddling a boundary is in or out as a whole and a
    constant prediction holds nothing. A day with an empty leg is flat. # [D, N]
    """
    valid = valid & np.isfinite(pred)
    ranks = within_day_ranks(np.asarray(pred, dtype=np.float64), valid)  # [D, N]
    n = valid.sum(axis=1, keepdims=True)  # [D, 1]
    k = np.maximum(1, np.floor(quantile * n))
    long = valid & (ranks > n - k)
    short = valid & (ranks < k + 1) & ~long
    n_long, n_short = long.sum(axis=1, keepdims=True), short.sum(axis=1, keepdims=True)
    active = (n_long > 0) & (n_short > 0) & (n >= 2)
    w = np.where(long, 1.0 / np.maximum(n_long, 1), 0.0) - np.where(short, 1.0 / np.maximum(n_short, 1), 0.0)
    return np.where(active, w, 0.0)


def staggered_weights(weights: np.ndarray, horizon: int) -> np.ndarray:
    """Portfolio weights of ``horizon`` staggered sub-books built from one-day target weights.

    Sub-book ``j`` last rebalanced on ``s = t - ((t - j) mod h)``; over ``j`` these are exactly the days
    ``t-h+1..t``, so the portfolio weight is the trailing h-day mean of the one-day weights (days
    before the first are flat). # [D, N]
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if horizon == 1:
        return weights
    csum = np.cumsum(np.vstack([np.zeros_like(weights[:1]), weights]), axis=0)  # [D+1, N]
    lagged = np.vstack([np.zeros((horizon, weights.shape[1])), csum[:-horizon]])[: csum.shape[0]]
    return (csum - lagged)[1:] / horizon


def book_returns(weights: np.ndarray, returns_1d: np.ndarray, cost_bps: float = 0.0) -> dict[str, np.ndarray]:
    """Daily gross/net return and turnover of a book with weights ``W[D, N]`` held over ``returns_1d[D, N]``.

    A held stock whose return is missing contributes 0; a day with no finite return at all is NaN.
    """
    r = np.asarray(returns_1d, dtype=np.float64)
    finite = np.isfinite(r)
    gross = (weights * np.where(finite, r, 0.0)).sum(axis=1)  # [D]
    gross = np.where(finite.any(axis=1), gross, np.nan)
    prev = np.vstack([np.zeros_like(weights[:1]), weights[:-1]])  # [D, N], flat before the first day
    turnover = np.abs(weights - prev).sum(axis=1)  # [D]
    return {"gross": gross, "net": gross - turnover * cost_bps / 1e4, "turnover": turnover}


def long_short_returns(pred: np.ndarray, returns_1d: np.ndarray, mask: np.ndarray | None = None,
                       horizon: int = 1, quantile: float = 0.2, cost_bps: float = 0.0) -> dict[str, np.ndarray]:
    """Equal-weight quintile long-short book (staggered sub-books for h > 1).

    Args:
        pred: ``[D, N]`` prediction made at the close of each day.
        returns_1d: ``[D, N]`` next-day return earned by a position formed at day t (``target_1d``).
        mask: ``[D, N]`` stocks tradable at t (default: finite ``pred``).
        horizon: h; h sub-books each rebalancing every h days (default 1).
        quantile: share of valid stocks in each leg (default 0.2, quintiles).
        cost_bps: one-way cost per unit of traded notional, in basis points (default 0).

    Returns:
        ``{"gross", "net", "turnover"}``, each ``[D]``. Weights: long leg +1, short leg -1 (gross 2).
    """
    pred = np.asarray(pred, dtype=np.float64)
    valid = _valid(mask, pred)
    weights = staggered_weights(quantile_weights(pred, valid, quantile), horizon)
    return book_returns(weights, returns_1d, cost_bps)


def lag_days(x: np.ndarray, lag: int) -> np.ndarray:
    """Shift along days so that row t holds row t - lag (NaN for the first ``lag`` days). # [D, ...]"""
    if lag < 0:
        raise InputError(f"execution lag must be >= 0 days, got {lag}")
    if lag == 0:
        return x
    out = np.full_like(x, np.nan, dtype=np.float64)
    if lag < len(x):
        out[lag:] = x[:-lag]
    return out


def lag_label(lag: int) -> str:
    """``lag1`` for tables and log lines; lag 0 says it is not tradeable."""
    return f"lag{lag}" + (" not tradeable" if lag == 0 else "")


def lagged_long_short(pred: np.ndarray, returns_1d: np.ndarray, valid: np.ndarray | None = None,
                      horizon: int = 1, quantile: float = 0.2, cost_bps: float = 0.0,
                      lag: int = TRADEABLE_LAG) -> dict[str, np.ndarray]:
    """:func:`long_short_returns` of the signal of day ``t - lag`` held over ``returns_1d[t]``.

    A stock is in the book of row ``t`` when it had a prediction (and ``valid``) on ``t - lag``; the
    first ``lag`` rows have no signal and are NaN (not part of the test). # each [D]
    """
    signal = lag_days(np.where(_valid(valid, pred), pred, np.nan), lag)  # [D, N]: row t = signal of t - lag
    book = long_short_returns(signal, returns_1d, None, horizon, quantile, cost_bps)
    book["gross"][:lag], book["net"][:lag] = np.nan, np.nan
    return book


# ---------------------------------------------------------------------------- return statistics


def _finite(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[np.isfinite(x)]


def sharpe(daily_returns: np.ndarray) -> float:
    """Annualised Sharpe ratio sqrt(252) * mean / std (ddof 1) of the finite daily returns."""
    x = _finite(daily_returns)
    if x.size < 2 or x.std(ddof=1) == 0:
        return math.nan
    return float(math.sqrt(TRADING_DAYS) * x.mean() / x.std(ddof=1))


def sharpe_se(sharpe_annual: float, days: int, variance_ratio: float = 1.0) -> float:
    """Standard error of an annualised Sharpe: ``sqrt(252 (kappa + SR_d^2 / 2) / days)``.

    Lo (2002) with the variance of the mean inflated by ``kappa = variance_ratio`` (HAC over iid
    variance of the mean, :func:`book_sharpe_se`); ``kappa = 1`` is Lo's iid formula.
    """
    if days < 2 or not math.isfinite(sharpe_annual) or not math.isfinite(variance_ratio):
        return math.nan
    sr_daily = sharpe_annual / math.sqrt(TRADING_DAYS)
    return math.sqrt(TRADING_DAYS * (variance_ratio + 0.5 * sr_daily**2) / days)


def book_sharpe_se(daily_returns: np.ndarray, horizon: int = 1) -> float:
    """HAC standard error of the annualised Sharpe of a daily book (staggered for ``horizon`` > 1).

    ``kappa = (hac_se / (std / sqrt(days)))^2`` carries the autocorrelation of the daily returns (with
    the lags of :func:`hac_lags` at ``horizon``) into :func:`sharpe_se`.
    """
    x = _finite(daily_returns)
    if x.size < 2 or x.std(ddof=1) == 0:
        return math.nan
    kappa = (hac_se(daily_returns, horizon) / (x.std(ddof=1) / math.sqrt(x.size))) ** 2
    return sharpe_se(sharpe(daily_returns), int(x.size), kappa)


def annualised_return(daily_returns: np.ndarray) -> float:
    """Arithmetic annualised return, 252 * mean daily return (consistent with the Sharpe ratio)."""
    x = _finite(daily_returns)
    return float(TRADING_DAYS * x.mean()) if x.size else math.nan


def equity_curve(daily_returns: np.ndarray) -> np.ndarray:
    """Compounded equity starting at 1; missing days earn 0. # [D]"""
    r = np.nan_to_num(np.asarray(daily_returns, dtype=np.float64), nan=0.0)
    return np.cumprod(1.0 + r)


def drawdown(daily_returns: np.ndarray) -> np.ndarray:
    """Drawdown of the compounded equity from its running peak (<= 0). # [D]"""
    equity = equity_curve(daily_returns)
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    return equity / peak - 1.0


def max_drawdown(daily_returns: np.ndarray) -> float:
    """Largest peak-to-trough loss of the compounded equity, as a negative fraction (0 if none)."""
    if _finite(daily_returns).size == 0:
        return math.nan
    return float(drawdown(daily_returns).min())


def hit_rate(daily_returns: np.ndarray) -> float:
    """Share of the finite days with a strictly positive return."""
    x = _finite(daily_returns)
    return float((x > 0).mean()) if x.size else math.nan


# ----------------------------------------------------------------------------- the one summary


def _daily_returns_for(k: int, h: int, target: np.ndarray, horizons: list[int],
                       daily_returns: np.ndarray | None) -> np.ndarray:
    if daily_returns is not None:
        return np.asarray(daily_returns, dtype=np.float64)
    if 1 in horizons:
        return np.asarray(target[..., horizons.index(1)], dtype=np.float64)
    return np.asarray(target[..., k], dtype=np.float64) / h  # proxy: mean daily return over the window


def _forward_target(target: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``target_{h}d`` of ``t + 1`` on row ``t`` (rows taken as consecutive trading days). # [D, N, H]"""
    present = target if mask is None else np.where(mask, target, np.nan)
    out = np.full_like(present, np.nan)
    out[:-1] = present[1:]
    return out


def daily_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None, horizons: list[int],
                  daily_returns: np.ndarray | None = None, cost_bps: float = 0.0, *, quantile: float = 0.2,
                  valid: np.ndarray | None = None, neutral_returns: np.ndarray | None = None,
                  min_stocks: int = MIN_STOCKS, lag: int = TRADEABLE_LAG,
                  forward_target: np.ndarray | None = None) -> dict[int, dict[str, np.ndarray]]:
    """Per-horizon daily series ``[D]``: ``ic, rank_ic, rank_ic_lag1, ls_gross, ls_net, ls_turnover``
    (+ beta-neutral).

    Arguments as :func:`evaluate_predictions`, which summarises exactly these series.
    """
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[2] != len(horizons):
        raise ValueError(f"pred {pred.shape} and target {target.shape} must be [D, N, H={len(horizons)}]")
    horizons = [int(h) for h in horizons]
    forward = _forward_target(target, mask) if forward_target is None else np.asarray(forward_target, np.float64)
    out: dict[int, dict[str, np.ndarray]] = {}
    for k, h in enumerate(horizons):
        m = None if mask is None else np.asarray(mask)[..., k]
        p = pred[..., k]
        book = lagged_long_short(p, _daily_returns_for(k, h, target, horizons, daily_returns), valid, h,
                                 quantile, cost_bps, lag)
        series = {"ic": daily_ic(p, target[..., k], m, min_stocks),
                  "rank_ic": daily_rank_ic(p, target[..., k], m, min_stocks),
                  "rank_ic_lag1": daily_rank_ic(p, forward[..., k], None, min_stocks),
                  "ls_gross": book["gross"], "ls_net": book["net"], "ls_turnover": book["turnover"]}
        if neutral_returns is not None:
            neutral = lagged_long_short(p, neutral_returns, valid, h, quantile, cost_bps, lag)
            series["ls_gross_beta_neutral"], series["ls_net_beta_neutral"] = neutral["gross"], neutral["net"]
        out[h] = series
    return out


def _book_summary(gross: np.ndarray, net: np.ndarray, turnover: np.ndarray | None, horizon: int,
                  suffix: str = "") -> dict[str, float]:
    """Sharpe (with its HAC SE), annualised return, drawdown, hit rate of one long-short book."""
    days = int(np.isfinite(gross).sum())
    out = {"sharpe": sharpe(gross), "sharpe_net": sharpe(net), "ann_return": annualised_return(gross),
           "ann_return_net": annualised_return(net), "max_drawdown": max_drawdown(gross),
           "max_drawdown_net": max_drawdown(net), "hit_rate": hit_rate(gross), "ls_days": days,
           "sharpe_se": book_sharpe_se(gross, horizon),
           "ann_return_net_se": TRADING_DAYS * hac_se(net, horizon)}
    if turnover is not None:
        out["turnover"] = float(np.mean(turnover[np.isfinite(gross)])) if days else math.nan
    return {f"{k}{suffix}": v for k, v in out.items()}


def summarise_daily(series: dict[str, np.ndarray], horizon: int, cost_bps: float, *,
                    lag: int = TRADEABLE_LAG) -> dict[str, float]:
    """The summary row of one horizon's daily series (see :func:`evaluate_predictions`); ``lag`` is
    the execution lag the books of ``series`` were built with, recorded in the row."""
    ic, ric = ic_summary(series["ic"], horizon), ic_summary(series["rank_ic"], horizon)
    row = {"ic": ic["mean"], "rank_ic": ric["mean"], "icir": ic["icir"], "rank_icir": ric["icir"],
           "tstat": ric["tstat"], "ic_tstat": ic["tstat"], "rank_ic_se": ric["se"], "ic_se": ic["se"],
           "rank_ic_hit_rate": hit_rate(series["rank_ic"]), "days": ric["days"], "se_lags": ric["lags"]}
    if "rank_ic_lag1" in series:
        fwd = ic_summary(series["rank_ic_lag1"], horizon)
        row.update({"rank_ic_lag1": fwd["mean"], "rank_ic_lag1_se": fwd["se"]})
    row.update(_book_summary(series["ls_gross"], series["ls_net"], series["ls_turnover"], horizon))
    if "ls_gross_beta_neutral" in series:
        row.update(_book_summary(series["ls_gross_beta_neutral"], series["ls_net_beta_neutral"], None, horizon,
                                 suffix="_beta_neutral"))
    row.update({"cost_bps": float(cost_bps), "horizon": int(horizon), "lag": int(lag)})
    return row


def evaluate_predictions(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None,
                         horizons: list[int], daily_returns: np.ndarray | None = None,
                         cost_bps: float = 0.0, *, quantile: float = 0.2, valid: np.ndarray | None = None,
                         neutral_returns: np.ndarray | None = None, min_stocks: int = MIN_STOCKS,
                         lag: int = TRADEABLE_LAG,
                         forward_target: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Every per-horizon metric of a prediction panel: the one source of reported numbers.

    Args:
        pred, target: ``[D, N, H]`` predictions and realised ``target_{h}d``.
        mask: ``[D, N, H]`` bool target-present mask (None: finite values).
        horizons: the ``H`` horizons in days, in the order of the last axis.
        daily_returns: ``[D, N]`` next-day returns the long-short book earns. None -> ``target_1d``
            if horizon 1 is present, else ``target_{h}d / h`` (an approximation: the mean daily
            return over the h-day window, which overlaps across days).
        cost_bps: one-way cost per unit traded, in basis points (default 0).
        quantile: leg size of the long-short book (default 0.2).
        valid: ``[D, N]`` stocks tradable at t; None -> finite prediction. Using the target mask
            instead would select only stocks known to survive h days (survivorship bias).
        neutral_returns: ``[D, N]`` market-beta-neutral next-day returns; adds ``*_beta_neutral`` keys.
        min_stocks: days with fewer valid stocks have no IC (default 5).
        lag: execution lag of every book in days (default 1, tradeable; 0 is not tradeable).
        forward_target: ``[D, N, H]`` the lag-1 forward return (``target_{h}d`` of ``t + 1`` on the
            global day axis) for ``rank_ic_lag1``; None -> ``target`` shifted by one row.

    Returns:
        ``{"1d": {"ic", "rank_ic", "icir", "rank_icir", "tstat", "ic_tstat", "rank_ic_se", "ic_se",
        "rank_ic_hit_rate", "days", "se_lags", "rank_ic_lag1", "rank_ic_lag1_se", "sharpe",
        "sharpe_net", "sharpe_se", "ann_return", "ann_return_net", "ann_return_net_se",
        "max_drawdown", "max_drawdown_net", "turnover", "hit_rate", "ls_days", "cost_bps", "horizon",
        "lag"}, ...}``; ``tstat`` is that of the mean RankIC; ``days`` counts days with a RankIC; every
        ``*_se`` is HAC (:func:`hac_se`, ``se_lags`` lags).
    """
    daily = daily_metrics(pred, target, mask, horizons, daily_returns, cost_bps, quantile=quantile,
                          valid=valid, neutral_returns=neutral_returns, min_stocks=min_stocks, lag=lag,
                          forward_target=forward_target)
    return {f"{h}d": summarise_daily(series, h, cost_bps, lag=lag) for h, series in daily.items()}


def _quantile_daily(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None, n_bins: int) -> np.ndarray:
    """Daily mean target of each within-day prediction quantile bin; NaN on days with < n_bins stocks.

    A stock's bin is ``floor((rank - 1) * n_bins / n)`` of its average rank among the day's ``n`` valid
    stocks (bin 0 = lowest). # [D, n_bins]
    """
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    valid = _valid(mask, pred, target)
    n = valid.sum(axis=1, keepdims=True)  # [D, 1]
    ranks = within_day_ranks(pred, valid)  # [D, N]
    bins = np.floor((np.nan_to_num(ranks) - 1) * n_bins / np.maximum(n, 1)).astype(int)  # [D, N]
    daily = np.full((pred.shape[0], n_bins), np.nan)  # [D, n_bins]
    for b in range(n_bins):  # a loop over the few bins; days and stocks stay vectorised
        sel = valid & (bins == b)
        count = sel.sum(axis=1)
        daily[:, b] = np.where(count > 0, np.where(sel, target, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan)
    daily[n[:, 0] < n_bins] = np.nan
    return daily


def quantile_mean_returns(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None,
                          n_bins: int = 5, horizon: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean target by within-day prediction quantile (bin 0 = lowest), averaged over days.

    Days with fewer than ``n_bins`` valid stocks are skipped (gaps for the HAC SE).

    Returns:
        ``(mean [n_bins], se [n_bins], days)``: mean over days of each bin's daily mean target, its
        HAC standard error (:func:`hac_se` at ``horizon``), and the number of days used.
    """
    daily = _quantile_daily(pred, target, mask, n_bins)  # [D, n_bins]
    used = int(np.isfinite(daily).any(axis=1).sum())
    mean = np.nanmean(daily, axis=0) if used else np.full(n_bins, np.nan)
    se = np.array([hac_se(daily[:, b], horizon) for b in range(n_bins)])
    return mean, se, used


def quantile_spread(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, n_bins: int = 5,
                    horizon: int = 1) -> dict[str, float]:
    """Top-minus-bottom quantile spread of the daily mean target: ``{"mean", "se", "tstat", "days"}`` (HAC)."""
    daily = _quantile_daily(pred, target, mask, n_bins)
    s = ic_summary(daily[:, -1] - daily[:, 0], horizon)
    return {"mean": s["mean"], "se": s["se"], "tstat": s["tstat"], "days": s["days"]}
