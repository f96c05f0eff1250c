"""Corporate-action adjustment: split detection for unadjusted panels and causal price adjustment.

Prices are **forward-adjusted**: every price on or after a split date is divided by the cumulative
split factor (volume multiplied), so all of a stock's history is expressed in its first day's share
basis. Unlike the usual back-adjustment, the adjusted value at ``t`` depends only on events at dates
``<= t``, so adjustment can never leak the future into a feature. Every feature is scale-free (ratios
of prices, of volumes, or of price x volume), so it has the same value under either convention.

Factor semantics follow J-Quants ``AdjustmentFactor``: the factor sits on the split date and is the
price multiplier of the action (0.5 for a 2-for-1 split, 10 for a 1-for-10 reverse split).
"""

from __future__ import annotations

import math

import polars as pl

from atft.errors import InputError

PRICE_COLUMNS = ("Open", "High", "Low", "Close")
ADJUSTED_COLUMNS = {f"Adjustment{c}": c for c in (*PRICE_COLUMNS, "Volume")}


def parse_split_ratio(label: str) -> float:
    """``"a:b"`` (a new shares for b old ones) -> price factor ``b / a`` (``"2:1"`` -> 0.5)."""
    try:
        new, old = (float(x) for x in str(label).split(":"))
    except ValueError:
        raise InputError(f"split ratio {label!r} is not of the form 'new:old', e.g. '2:1'") from None
    if new <= 0 or old <= 0:
        raise InputError(f"split ratio {label!r} must have positive parts")
    return old / new


def detect_splits(
    df: pl.DataFrame, threshold: float, tolerance: float, ratios: list[str],
    volume_tolerance: float = 1.1, volume_window: int = 20,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split-like jumps in an unadjusted panel sorted by ``Code, Date``, and the candidates refused.

    A row is a split **candidate** when (1) ``|Close_t / Close_{t-1} - 1| > threshold``; (2) the move is
    within ``tolerance`` (in log space) of a listed split ratio's price factor ``f``; and (3) the
    open confirms it: ``|log(Open_t / Close_{t-1}) - log f| <= tolerance`` (a split happens
    overnight, whereas a takeover-style jump during the day does not pass).

    A candidate is a split **event** only when the volume corroborates it: a split multiplies the share
    count by ``1 / f``, so the day's share volume over the median of the stock's previous
    ``volume_window`` rows, ``volume_ratio``, must satisfy ``|log(volume_ratio) - log(1 / f)| <=
    volume_tolerance`` (its dollar volume stays ordinary). A genuine -50% crash or deal break trades
    many times its usual volume and fails this; so does a candidate without volume data. The evidence
    uses rows at dates ``<= t`` only, so detection never looks ahead.

    Returns:
        ``(events, refused)``: ``Code, Date, ratio (label), factor (f), raw_return, open_gap,
        volume_ratio, expected_volume_ratio`` - one row per event / refused candidate.
    """
    factors = {label: parse_split_ratio(label) for label in ratios}
    prev = pl.col("_prev")
    log_move = (pl.col("Close") / prev).log()
    log_gap = (pl.col("Open") / prev).log()
    usual = pl.col("Volume").shift(1).rolling_median(volume_window, min_samples=max(1, volume_window // 4))
    dist = {label: (log_move - math.log(f)).abs() for label, f in factors.items()}
    best = pl.min_horizontal(*dist.values())
    label = pl.coalesce([pl.when(d == best).then(pl.lit(lab)) for lab, d in dist.items()])
    # rows with a large move first: the ratio matching below then runs on those few rows only
    moves = df.select("Code", "Date", "Open", "Close", pl.col("Close").shift(1).over("Code").alias("_prev"))
    moves = moves.filter((pl.col("Close") / prev - 1).abs() > threshold).select(
        "Code",
        "Date",
        label.alias("ratio"),
        best.alias("dist"),
        (pl.col("Close") / prev - 1).alias("raw_return"),
        (pl.col("Open") / prev - 1).alias("open_gap"),
        log_gap.alias("log_gap"),
    )
    # the volume evidence needs a rolling median: computed on the stocks with a large move only
    moved = df.filter(pl.col("Code").is_in(moves["Code"].unique().implode()))
    ratios = moved.select("Code", "Date", (pl.col("Volume") / usual.over("Code")).alias("volume_ratio"))
    cand = moves.join(ratios, on=["Code", "Date"], how="left", maintain_order="left")
    factor = pl.col("ratio").replace_strict(factors, return_dtype=pl.Float64)
    cand = cand.with_columns(factor.alias("factor"), (1 / factor).alias("expected_volume_ratio")).filter(
        (pl.col("dist") <= tolerance) & ((pl.col("log_gap") - pl.col("factor").log()).abs() <= tolerance)
    )
    volume_dist = (pl.col("volume_ratio").log() + pl.col("factor").log()).abs()
    corroborated = (volume_dist <= volume_tolerance).fill_null(False)  # [rows] no volume data: not a split
    cols = ["Code", "Date", "ratio", "factor", "raw_return", "open_gap", "volume_ratio", "expected_volume_ratio"]
    return cand.filter(corroborated).select(cols), cand.filter(~corroborated).select(cols)


def unexplained_jumps(df: pl.DataFrame, threshold: float, events: pl.DataFrame) -> pl.DataFrame:
    """Moves beyond ``threshold`` that are not split events (e.g. takeover jumps): kept, reported."""
    prev = pl.col("Close").shift(1).over("Code")
    jumps = df.select("Code", "Date", (pl.col("Close") / prev - 1).alias("raw_return"))
    jumps = jumps.filter(pl.col("raw_return").abs() > threshold)
    return jumps.join(events.select("Code", "Date"), on=["Code", "Date"], how="anti")


def forward_adjust(df: pl.DataFrame, factor_col: str = "AdjustmentFactor") -> pl.DataFrame:
    """Divide prices (multiply volume) by the cumulative product of ``factor_col`` within each stock.

    Rows must be sorted by ``Code, Date``; a null factor counts as 1 (no action).
    """
    cum = pl.col(factor_col).fill_null(1.0).cum_prod().over("Code")
    return df.with_columns(
        *[(pl.col(c) / cum).alias(c) for c in PRICE_COLUMNS], (pl.col("Volume") * cum).alias("Volume")
    )


def adjust_prices(df: pl.DataFrame, build_cfg) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, str]:
    """Apply the best available adjustment; returns ``(adjusted, split_events, refused, method)``.

    Order of preference: provider-adjusted ``Adjustment*`` prices (used as they are), then a provider
    ``AdjustmentFactor`` (forward-adjusted), then split detection on the raw prices.
    """
    no_events = pl.DataFrame(
        schema={"Code": pl.Utf8, "Date": pl.Date, "ratio": pl.Utf8, "factor": pl.Float64,
                "raw_return": pl.Float64, "open_gap": pl.Float64, "volume_ratio": pl.Float64,
                "expected_volume_ratio": pl.Float64}
    )
    if all(c in df.columns for c in ADJUSTED_COLUMNS):
        out = df.with_columns(*[pl.col(a).alias(c) for a, c in ADJUSTED_COLUMNS.items()])
        return out.drop(list(ADJUSTED_COLUMNS)), no_events, no_events, "provider adjusted prices (Adjustment*)"
    df = df.drop([c for c in ADJUSTED_COLUMNS if c in df.columns])
    if "AdjustmentFactor" in df.columns:
        return forward_adjust(df), no_events, no_events, "provider AdjustmentFactor (forward-adjusted)"
    if not build_cfg.detect_splits:
        return df, no_events, no_events, "none"
    events, refused = detect_splits(
        df,
        float(build_cfg.split_jump_threshold),
        float(build_cfg.split_ratio_tolerance),
        list(build_cfg.split_ratios),
        float(build_cfg.split_volume_tolerance),
        int(build_cfg.split_volume_window),
    )
    if events.height == 0:  # nothing to divide by: the prices as they are (x / 1 == x)
        return df, events, refused, "detected splits (forward-adjusted)"
    marked = df.join(events.select("Code", "Date", pl.col("factor").alias("_split")), on=["Code", "Date"],
                     how="left").sort("Code", "Date")
    return forward_adjust(marked, "_split").drop("_split"), events, refused, "detected splits (forward-adjusted)"
