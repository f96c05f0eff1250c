"""Per-stock technical features from an adjusted daily panel (polars expressions on rolling windows).

Every feature at ``(Code, t)`` uses rows of that stock at dates ``<= t`` only (rolling windows look
back, never forward), is scale-free (unchanged when a stock's prices or volumes are multiplied by a
constant, so split adjustment cannot move it), and is **null where its window is incomplete**
(``min_samples`` equals the window). Windows count a stock's own rows (trading-day positions).

One-day price moves (close-to-close, overnight, intraday) are clipped at +-``jump_clip`` before they
enter any feature: a split that was not detected or a takeover jump must not dominate a 60-day
statistic. Likewise the high/low used by range features is first made consistent with the open and
close (``High >= max(Open, Close)``) and its wick beyond them capped at a factor ``1 + jump_clip``
(bad ticks such as the 2010-05-06 flash-crash prints). Targets (``targets.py``) use the unclipped
adjusted close.

Every rolling window is a helper column named by ``rolling.window`` (the stock's last k rows of one
column): ``compute_features`` fills them with polars window expressions and evaluates the expressions
here (the reference definition). The build (``pipeline``) computes the same features in one compiled
pass per stock (``compiled_features``: the windows from the kernels of ``rolling``, the arithmetic
restated op by op; a feature added here needs a spec there, and ``tests/data/test_compiled_features.py``
checks the two agree bit for bit on the same windows).

Market, beta and sector features (which need the whole cross-section) live in ``cross_section.py``.
"""

from __future__ import annotations

import math

import polars as pl

from atft.data.cross_section import beta_features, finite, market_features, sector_features
from atft.data.rolling import polars_windows, window, windows_of

ANNUAL = math.sqrt(252.0)
RETURN_WINDOWS = (1, 2, 3, 5, 10, 20, 60)
VOL_WINDOWS = (5, 10, 20, 60)
MA_WINDOWS = (5, 10, 20, 60)


def _roll(name: str, fn: str, k: int) -> pl.Expr:
    """``fn`` of column ``name`` over the last ``k`` rows of the same stock; null until full."""
    return window(name, fn, k)


def previous_close() -> pl.Expr:
    """The stock's previous row's close (null on its first row): ``daily_inputs``' ``_prev``."""
    return pl.col("Close").shift(1).over("Code").alias("_prev")


def daily_inputs(jump_clip: float) -> list[list[pl.Expr]]:
    """Helper columns (prefixed ``_``) every group builds on, as stages of ``with_columns`` (a stage
    reads the columns of the stages before it); dropped before output. Needs ``_prev``
    (``previous_close``)."""
    prev = pl.col("_prev")
    oc_hi, oc_lo = pl.max_horizontal("Open", "Close"), pl.min_horizontal("Open", "Close")
    r = pl.col("_r")
    return [
        [
            (pl.col("Close") / prev - 1).clip(-jump_clip, jump_clip).alias("_r"),
            # high/low made consistent with open/close, their wick capped like a one-day move (bad ticks, flash crash)
            pl.max_horizontal("High", oc_hi).clip(upper_bound=oc_hi * (1 + jump_clip)).alias("_hi"),
            pl.min_horizontal("Low", oc_lo).clip(lower_bound=oc_lo / (1 + jump_clip)).alias("_lo"),
            (pl.col("Close") / pl.col("Open")).log().alias("_co"),
            (pl.col("Open") / prev - 1).clip(-jump_clip, jump_clip).alias("_gap"),
            (pl.col("Close") / pl.col("Open") - 1).clip(-jump_clip, jump_clip).alias("_intraday"),
            finite(pl.col("Volume").log()).alias("_lv"),
            finite(pl.col("DollarVolume")).alias("_dv"),
        ],
        [
            r.log1p().alias("_lr"),
            (pl.col("_hi") / pl.col("_lo")).log().alias("_hl"),
            pl.max_horizontal(r, 0.0).alias("_gain"),
            pl.max_horizontal(-r, 0.0).alias("_loss"),
            pl.min_horizontal(r.log1p(), 0.0).alias("_down"),
            finite(r.abs() / pl.col("_dv")).alias("_illiq"),
        ],
        # Garman-Klass daily variance
        [(0.5 * pl.col("_hl").pow(2) - (2 * math.log(2) - 1) * pl.col("_co").pow(2)).alias("_gk")],
    ]


def with_daily_inputs(frame, jump_clip: float):
    """``frame`` (a DataFrame or LazyFrame with ``_prev``) with the helper columns of ``daily_inputs``."""
    for stage in daily_inputs(jump_clip):
        frame = frame.with_columns(stage)
    return frame


def return_features() -> dict[str, pl.Expr]:
    """``returns_{k}d = prod(1 + r) - 1`` over the last k days (= Close_t/Close_{t-k} - 1 unclipped)."""
    out = {f"returns_{k}d": _roll("_lr", "sum", k).exp() - 1 for k in RETURN_WINDOWS}
    out["momentum_60d_skip5d"] = (_roll("_lr", "sum", 60) - _roll("_lr", "sum", 5)).exp() - 1
    return out


def volatility_features() -> dict[str, pl.Expr]:
    """Annualised realised (close-to-close), Parkinson and Garman-Klass volatility; ratios."""
    out: dict[str, pl.Expr] = {}
    for k in VOL_WINDOWS:
        out[f"realized_vol_{k}d"] = _roll("_lr", "std", k) * ANNUAL
    for k in VOL_WINDOWS:
        out[f"parkinson_vol_{k}d"] = (_roll_sq("_hl", k) / (4 * math.log(2))).sqrt() * ANNUAL
    for k in VOL_WINDOWS:
        out[f"garman_klass_vol_{k}d"] = _roll("_gk", "mean", k).clip(lower_bound=0.0).sqrt() * ANNUAL
    out["vol_ratio_5d_20d"] = finite(out["realized_vol_5d"] / out["realized_vol_20d"])
    out["downside_vol_20d"] = (_roll_sq("_down", 20)).sqrt() * ANNUAL
    return out


def _roll_sq(name: str, k: int) -> pl.Expr:
    """Rolling mean of the square of column ``name`` over the last ``k`` rows of the stock, >= 0.

    A window of zeros (no down move, high = low) has mean 0; a running sum's rounding can leave it
    just below 0, whose square root would be NaN (a null feature), so it is clipped at 0.
    """
    return _roll(name, "sqmean", k).clip(lower_bound=0.0)


def moving_average_features() -> dict[str, pl.Expr]:
    """Gap of the close to its simple moving averages, and MA crossovers."""
    ma = {k: _roll("Close", "mean", k) for k in MA_WINDOWS}
    out = {f"ma_gap_{k}d": pl.col("Close") / ma[k] - 1 for k in MA_WINDOWS}
    out["ma_cross_5d_20d"] = ma[5] / ma[20] - 1
    out["ma_cross_20d_60d"] = ma[20] / ma[60] - 1
    return out


def oscillator_features() -> dict[str, pl.Expr]:
    """RSI (simple-average form), MACD (12/26/9, scaled by the close), Bollinger, stochastic %K."""
    out: dict[str, pl.Expr] = {}
    for k in (5, 14):
        gain, loss = _roll("_gain", "mean", k), _roll("_loss", "mean", k)
        # 100 g / (g + l) written so that a window without losses is exactly 100 and one without gains
        # exactly 0 (ties that a per-date rank must see as ties); a window with no move at all is neutral (50)
        out[f"rsi_{k}d"] = pl.when(gain + loss > 0).then(100 / (1 + loss / gain)).otherwise(
            pl.when(gain.is_not_null()).then(50.0)
        )
    ema12 = pl.col("Close").ewm_mean(span=12, adjust=False, min_samples=26).over("Code")
    ema26 = pl.col("Close").ewm_mean(span=26, adjust=False, min_samples=26).over("Code")
    out["macd_12_26"] = (ema12 - ema26) / pl.col("Close")
    ma20, sd20 = _roll("Close", "mean", 20), _roll("Close", "std", 20)
    out["bollinger_pos_20d"] = finite((pl.col("Close") - ma20) / (2 * sd20))
    out["bollinger_width_20d"] = 4 * sd20 / ma20
    lo14, hi14 = _roll("_lo", "min", 14), _roll("_hi", "max", 14)
    out["stoch_k_14d"] = finite((pl.col("Close") - lo14) / (hi14 - lo14))
    return out


def macd_signal_features() -> dict[str, pl.Expr]:
    """MACD signal line (9-day EMA of ``macd_12_26``) and histogram; needs ``macd_12_26`` present."""
    signal = pl.col("macd_12_26").ewm_mean(span=9, adjust=False, min_samples=9).over("Code")
    return {"macd_signal_9": signal, "macd_hist": pl.col("macd_12_26") - signal}


def volume_features() -> dict[str, pl.Expr]:
    """Volume ratios and z-score, dollar volume level and trend, Amihud illiquidity."""
    out = {f"volume_ratio_{k}d": finite(pl.col("Volume") / _roll("Volume", "mean", k)) for k in (5, 20)}
    out["volume_zscore_20d"] = finite((pl.col("_lv") - _roll("_lv", "mean", 20)) / _roll("_lv", "std", 20))
    out["log_dollar_volume_20d"] = finite(_roll("_dv", "mean", 20).log())
    out["dollar_volume_ratio_5d_20d"] = finite(_roll("_dv", "mean", 5) / _roll("_dv", "mean", 20))
    for k in (20, 60):
        # log: Amihud's ratio spans orders of magnitude across stocks; 1e-12 keeps all-zero-move windows finite
        out[f"amihud_illiq_{k}d"] = (_roll("_illiq", "mean", k) + 1e-12).log()
    return out


def range_features() -> dict[str, pl.Expr]:
    """Distance of the close to rolling highs/lows, and today's high-low range."""
    out: dict[str, pl.Expr] = {}
    for k in (20, 60):
        out[f"dist_high_{k}d"] = pl.col("Close") / _roll("_hi", "max", k) - 1
        out[f"dist_low_{k}d"] = pl.col("Close") / _roll("_lo", "min", k) - 1
    out["hl_range_1d"] = pl.col("_hl")
    return out


def intraday_features() -> dict[str, pl.Expr]:
    """Overnight gap and open-to-close return (today and 5-day mean), close location in the range."""
    span = pl.col("_hi") - pl.col("_lo")
    return {
        "overnight_gap_1d": pl.col("_gap"),
        "intraday_return_1d": pl.col("_intraday"),
        "close_location_1d": pl.when(span > 0).then((pl.col("Close") - pl.col("_lo")) / span).otherwise(0.5),
        "overnight_gap_mean_5d": _roll("_gap", "mean", 5),
        "intraday_return_mean_5d": _roll("_intraday", "mean", 5),
    }


PER_STOCK_GROUPS = {
    "returns": return_features,
    "volatility": volatility_features,
    "moving_average": moving_average_features,
    "oscillators": oscillator_features,
    "volume": volume_features,
    "range": range_features,
    "intraday": intraday_features,
}


def compute_features(raw: pl.LazyFrame, jump_clip: float = 0.4) -> tuple[pl.LazyFrame, dict[str, list[str]]]:
    """All feature columns added to ``raw`` (sorted by ``Code, Date``), unnormalised.

    Args:
        raw: adjusted panel ``Code, Date, Open, High, Low, Close, Volume, DollarVolume, Sector``.
        jump_clip: one-day moves are clipped at +-this inside features (default 0.4).

    Returns:
        ``(frame, groups)``: the frame with helper columns dropped, and group name -> feature names.
        The ``market`` group holds market-wide features (one value per date, not cross-sectionally
        normalisable); every other group is per-stock.
    """
    lf = with_daily_inputs(raw.sort("Code", "Date").with_columns(previous_close()), jump_clip)
    groups: dict[str, list[str]] = {}
    exprs: dict[str, pl.Expr] = {}
    for group, make in PER_STOCK_GROUPS.items():
        made = make()
        groups[group] = list(made)
        exprs.update(made)
    lf = lf.with_columns(polars_windows(windows_of(exprs.values())))
    lf = lf.with_columns(*[finite(e).alias(n) for n, e in exprs.items()])
    signal = macd_signal_features()
    lf = lf.with_columns(*[finite(e).alias(n) for n, e in signal.items()])
    groups["oscillators"] += list(signal)
    for group, step in (("market", market_features), ("beta", beta_features), ("sector", sector_features)):
        lf, names = step(lf)
        groups[group] = names
    helpers = [c for c in lf.collect_schema().names() if c.startswith("_")]
    return lf.drop(helpers), groups
