"""Forward-return targets: ``target_{h}d = Close(t+h) / Close(t) - 1`` on the adjusted close.

``t+h`` is the h-th next trading day of the panel (the global date axis: the sorted distinct dates of
all stocks), not the stock's h-th next row. Untraded rows are dropped upstream and a stock may be absent
on some dates, so its h-th next row can lie weeks ahead; the target is instead looked up on day
``t+h`` and is null where the stock has no row that day (or ``t+h`` is past the data). A stock missing a
day strictly between ``t`` and ``t+h`` still has a target: both closes exist and ``h`` trading days
separate them. Missing targets stay missing (the loss masks them), never filled. Targets are raw
returns, not normalised.
"""

from __future__ import annotations

import numpy as np
import polars as pl

# Temporary column: dense rank of Date over the whole panel (1 = first trading day).
_DAY = "__target_day_index"
_AHEAD = "__target_close_ahead"


def target_names(horizons) -> list[str]:
    return [f"target_{int(h)}d" for h in horizons]


def _check(horizons) -> None:
    for h in horizons:
        if int(h) < 1:
            raise ValueError(f"data.build.horizons contains {h!r}: horizons must be positive integers")


def add_targets(df: pl.LazyFrame | pl.DataFrame, horizons) -> pl.LazyFrame | pl.DataFrame:
    """Add ``target_{h}d`` for each h in ``horizons`` to a frame sorted by ``Code, Date``.

    Args:
        df: panel with ``Code, Date, Close``, one row per ``(Code, Date)``, sorted by ``Code, Date``.
        horizons: positive integers, in trading days of the panel's global date axis.
    """
    _check(horizons)
    frame = df.with_columns(pl.col("Date").rank("dense").cast(pl.Int64).alias(_DAY))
    closes = frame.select("Code", _DAY, pl.col("Close").alias(_AHEAD))
    for h, name in zip(horizons, target_names(horizons)):
        # The row of the same stock whose day index is t's + h, i.e. Close(t+h); no such row -> null.
        ahead = closes.with_columns(pl.col(_DAY) - int(h))
        frame = (frame.join(ahead, on=["Code", _DAY], how="left", maintain_order="left")
                 .with_columns((pl.col(_AHEAD) / pl.col("Close") - 1).alias(name)).drop(_AHEAD))
    return frame.drop(_DAY)


def target_arrays(code: np.ndarray, day: np.ndarray, close: np.ndarray, horizons) -> dict[str, np.ndarray]:
    """``add_targets``'s numbers by binary search: ``target_{h}d`` for rows sorted by ``Code, Date``.

    Args:
        code: ``[rows]`` stock position (non-decreasing). day: ``[rows]`` position of the row's date on
            the global date axis (increasing within a stock). close: ``[rows]`` adjusted close.

    Returns:
        ``{target_{h}d: [rows] float64}``, NaN where the stock has no row ``h`` trading days ahead.
    """
    _check(horizons)
    stride = int(day.max()) + max(int(h) for h in horizons) + 1
    key = code.astype(np.int64) * stride + day                      # [rows] sorted
    out = {}
    for h, name in zip(horizons, target_names(horizons)):
        want = key + int(h)
        at = np.minimum(np.searchsorted(key, want), len(key) - 1)
        out[name] = np.where(key[at] == want, close[at] / close - 1, np.nan)
    return out
