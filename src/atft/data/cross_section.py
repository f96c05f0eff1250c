"""Features that need the cross-section of a date, and the per-date cross-sectional normalisation.

Everything here at date ``t`` uses rows at dates ``<= t`` only: market aggregates are per-date means
over the stocks trading that day, rolled over the sorted list of dates; sector aggregates are
per-(date, sector) means over the stocks labelled with that sector on that date (unlabelled stocks
are in none).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

ANNUAL = math.sqrt(252.0)


def finite(expr: pl.Expr) -> pl.Expr:
    """Non-finite results (x/0, log 0) become null: missing, never inf."""
    return pl.when(expr.is_finite()).then(expr)


def market_features(lf: pl.LazyFrame) -> tuple[pl.LazyFrame, list[str]]:
    """Equal-weight market return (1/5/20d), its volatility (20/60d), breadth, dispersion.

    One value per date (the same for every stock), so these are kept raw; the training loader
    scales them with statistics fitted on training dates only.
    """
    daily = market_daily(lf)
    names = [c for c in daily.collect_schema().names() if c != "Date"]
    out = lf.join(daily, on="Date", how="left").sort("Code", "Date")
    return out, names


def market_daily(lf: pl.LazyFrame) -> pl.LazyFrame:
    """One row per date, sorted by ``Date``: the market features of ``market_features``.

    Args:
        lf: rows with ``Date``, ``_r`` (clipped one-day return) and ``ma_gap_20d`` (raw).
    """
    daily = lf.group_by("Date").agg(
        pl.col("_r").mean().alias("mkt_return_1d"),
        (pl.col("_r") > 0).mean().alias("mkt_breadth_1d"),
        pl.col("_r").std().alias("mkt_dispersion_1d"),
        (pl.col("ma_gap_20d") > 0).mean().alias("mkt_breadth_ma20_1d"),
    )
    return market_rolling(daily)


def market_rolling(daily: pl.LazyFrame) -> pl.LazyFrame:
    """The daily market aggregates (``mkt_return_1d``, ``mkt_breadth_1d``, ``mkt_dispersion_1d``,
    ``mkt_breadth_ma20_1d``, one row per ``Date``) sorted by date, with their k-day compounded returns and
    volatilities: ``market_daily``'s columns."""
    lr = pl.col("mkt_return_1d").log1p()
    return daily.sort("Date").with_columns(
        *[(lr.rolling_sum(k, min_samples=k).exp() - 1).alias(f"mkt_return_{k}d") for k in (5, 20)],
        *[(pl.col("mkt_return_1d").rolling_std(k, min_samples=k) * ANNUAL).alias(f"mkt_vol_{k}d")
          for k in (20, 60)],
    )


def beta_features(lf: pl.LazyFrame) -> tuple[pl.LazyFrame, list[str]]:
    """Rolling beta/alpha to the equal-weight market (20, 60d), 60d correlation and idiosyncratic vol.

    ``beta = cov(r, m) / var(m)``, ``alpha = mean(r) - beta * mean(m)`` (daily), both over the stock's
    last k rows where its own return exists.
    """
    m = pl.when(pl.col("_r").is_not_null()).then(pl.col("mkt_return_1d"))
    lf = lf.with_columns(m.alias("_m"), (pl.col("_r") * m).alias("_rm"))

    def mean(col: str, k: int) -> pl.Expr:
        return pl.col(col).rolling_mean(k, min_samples=k).over("Code")

    def sq_mean(col: str, k: int) -> pl.Expr:
        return pl.col(col).pow(2).rolling_mean(k, min_samples=k).over("Code")

    exprs: dict[str, pl.Expr] = {}
    for k in (20, 60):
        cov = mean("_rm", k) - mean("_r", k) * mean("_m", k)
        var_m = sq_mean("_m", k) - mean("_m", k).pow(2)
        beta = cov / var_m
        exprs[f"beta_{k}d"] = beta
        exprs[f"alpha_{k}d"] = mean("_r", k) - beta * mean("_m", k)
        if k == 60:
            var_r = sq_mean("_r", k) - mean("_r", k).pow(2)
            exprs["corr_mkt_60d"] = cov / (var_r * var_m).sqrt()
            exprs["idio_vol_60d"] = (var_r - beta.pow(2) * var_m).clip(lower_bound=0.0).sqrt() * ANNUAL
    return lf.with_columns(*[finite(e).alias(n) for n, e in exprs.items()]), list(exprs)


def sector_features(lf: pl.LazyFrame, means: str | None = None) -> tuple[pl.LazyFrame, list[str]]:
    """Sector mean returns (5/20d) and the stock's return/volatility relative to its sector that day.

    A stock without a sector label (null ``Sector``) is in no sector: it enters no sector's mean and its
    own sector features are null (polars would otherwise group the nulls into one pseudo-sector).

    Args:
        means: None: the sector means are computed here (``mean().over(["Date", "Sector"])``); a prefix:
            ``lf`` already holds each input's sector mean as ``<prefix><input>`` (null without a sector).
    """
    by = ["Date", "Sector"]

    def sector_mean(col: str) -> pl.Expr:
        if means is not None:
            return pl.col(f"{means}{col}")
        return pl.when(pl.col("Sector").is_not_null()).then(pl.col(col).mean().over(by))

    sec = {k: sector_mean(f"returns_{k}d") for k in (1, 5, 20)}
    exprs = {
        "sector_return_5d": sec[5],
        "sector_return_20d": sec[20],
        **{f"sector_rel_return_{k}d": pl.col(f"returns_{k}d") - sec[k] for k in (1, 5, 20)},
        "sector_rel_vol_20d": pl.col("realized_vol_20d") / sector_mean("realized_vol_20d") - 1,
    }
    return lf.with_columns(*[finite(e).alias(n) for n, e in exprs.items()]), list(exprs)


def cs_normalize(lf: pl.LazyFrame, columns: list[str], sigma: float = 5.0, method: str = "zscore") -> pl.LazyFrame:
    """Per-date cross-sectional normalisation of ``columns`` (names kept), across all stocks of a date.

    ``zscore`` (winsorised): clip x at ``median +- sigma * 1.4826 * MAD`` (the std when MAD is 0), then
    ``(x - mean) / std`` of the clipped values, so each date has mean 0 and std 1 exactly.
    ``rank``: the same z-score applied to the per-date ranks (uniform -> mean 0, std 1).
    A date where the (clipped) values do not vary gets 0; null stays null.

    Args:
        columns: feature names to normalise. sigma: winsorisation width (default 5).
        method: ``zscore`` or ``rank``.
    """
    if method not in ("zscore", "rank"):
        raise ValueError(f"data.build.cs_method={method!r}: expected 'zscore' or 'rank'")
    if method == "rank":
        lf = lf.with_columns(*[pl.col(c).rank("average").over("Date").cast(pl.Float64).alias(c) for c in columns])
    else:
        clipped = []
        for c in columns:
            x = pl.col(c)
            med = x.median().over("Date")
            scale = 1.4826 * (x - med).abs().median().over("Date")
            scale = pl.when(scale > 0).then(scale).otherwise(x.std().over("Date"))
            clipped.append(x.clip(med - sigma * scale, med + sigma * scale).alias(c))
        lf = lf.with_columns(clipped)
    exprs = []
    for c in columns:
        x = pl.col(c)
        sd = x.std().over("Date")
        # relative floor: a cross-section equal up to rounding (e.g. one sector) carries no information
        z = pl.when(sd > 1e-12 * (1 + x.abs().max().over("Date"))).then((x - x.mean().over("Date")) / sd).otherwise(pl.when(x.is_not_null()).then(0.0))
        exprs.append(z.alias(c))
    return lf.with_columns(exprs)


def date_grid(values: np.ndarray, day: np.ndarray, code: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Row values scattered onto the dense date x stock grid, NaN where a stock has no row or no value.

    Args:
        values: ``[rows]`` floats, NaN for missing. day, code: ``[rows]`` date / stock positions.
        shape: ``(dates, stocks)``.

    Returns:
        ``[D, N]`` float64.
    """
    grid = np.full(shape, np.nan)
    grid[day, code] = values
    return grid


def _row_median(x: np.ndarray, valid: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Median of the valid entries of each row (NaN for a row without any).  # [D]

    Rows are partitioned in batches of equal valid count (one batch on a panel without gaps).
    """
    filled = np.where(valid, x, np.inf)  # invalid entries sort last
    out = np.full(len(x), np.nan)
    for n in np.unique(count[count > 0]):
        rows = np.flatnonzero(count == n)
        kth = [(n - 1) // 2, n // 2]
        part = np.partition(filled[rows], kth, axis=1)
        out[rows] = 0.5 * (part[:, kth[0]] + part[:, kth[1]])
    return out


def _row_mean_std(x: np.ndarray, valid: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (ddof 1) of the valid entries of each row; NaN when undefined."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid, x, 0.0).sum(1) / count
        dev = np.where(valid, x - mean[:, None], 0.0)
        std = np.sqrt((dev * dev).sum(1) / (count - 1))
    return mean, np.where(count > 1, std, np.nan)


def zscore_grid(grid: np.ndarray, sigma: float, clip: bool = True) -> np.ndarray:
    """``cs_normalize``'s per-date z-score on a ``[D, N]`` grid (NaN = missing): the same numbers, per row.

    Winsorise at ``median +- sigma * 1.4826 * MAD`` (the std when the MAD is 0; no clip where that is
    undefined) when ``clip``, then ``(x - mean) / std``; a row whose clipped values do not vary gets 0.

    Returns:
        ``[D, N]`` float64, NaN where ``grid`` is NaN.
    """
    valid = ~np.isnan(grid)
    count = valid.sum(1)
    x = grid
    if clip:
        med = _row_median(grid, valid, count)
        scale = 1.4826 * _row_median(np.abs(grid - med[:, None]), valid, count)
        with np.errstate(invalid="ignore"):
            scale = np.where(scale > 0, scale, _row_mean_std(grid, valid, count)[1])
            lo, hi = (med - sigma * scale)[:, None], (med + sigma * scale)[:, None]
            x = np.where(grid < lo, lo, grid)  # a NaN bound compares False: no clip, as in polars
            x = np.where(x > hi, hi, x)
    mean, sd = _row_mean_std(x, valid, count)
    top = np.where(valid, np.abs(x), 0.0).max(1)
    with np.errstate(invalid="ignore"):
        varies = sd > 1e-12 * (1 + top)  # the relative floor of cs_normalize
        z = np.where(varies[:, None], (x - mean[:, None]) / np.where(varies, sd, 1.0)[:, None], 0.0)
    return np.where(valid, z, np.nan)
