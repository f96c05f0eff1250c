"""Features that need the cross-section of a date, and the per-date cross-sectional normalisation.

Everything here at date ``t`` uses rows at dates ``<= t`` only: market aggregates are per-date means
over the stocks trading that day, rolled over the sorted list of dates; sector aggregates are
per-(date, sector) means over the stocks labelled with that sector on that date (unlabelled stocks
are in none).
"""

from __future__ import annotations

import math

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
    daily = lf.group_by("Date").agg(
        pl.col("_r").mean().alias("mkt_return_1d"),
        (pl.col("_r") > 0).mean().alias("mkt_breadth_1d"),
        pl.col("_r").std().alias("mkt_dispersion_1d"),
        (pl.col("ma_gap_20d") > 0).mean().alias("mkt_breadth_ma20_1d"),
    )
    lr = pl.col("mkt_return_1d").log1p()
    daily = daily.sort("Date").with_columns(
        *[(lr.rolling_sum(k, min_samples=k).exp() - 1).alias(f"mkt_return_{k}d") for k in (5, 20)],
        *[(pl.col("mkt_return_1d").rolling_std(k, min_samples=k) * ANNUAL).alias(f"mkt_vol_{k}d")
          for k in (20, 60)],
    )
    names = [c for c in daily.collect_schema().names() if c != "Date"]
    out = lf.join(daily, on="Date", how="left").sort("Code", "Date")
    return out, names


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


def sector_features(lf: pl.LazyFrame) -> tuple[pl.LazyFrame, list[str]]:
    """Sector mean returns (5/20d) and the stock's return/volatility relative to its sector that day.

    A stock without a sector label (null ``Sector``) is in no sector: it enters no sector's mean and its
    own sector features are null (polars would otherwise group the nulls into one pseudo-sector).
    """
    by = ["Date", "Sector"]

    def sector_mean(col: str) -> pl.Expr:
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
