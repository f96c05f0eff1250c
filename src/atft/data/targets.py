"""Forward-return targets: ``target_{h}d = Close(t+h) / Close(t) - 1`` on the adjusted close.

``t+h`` is the stock's h-th next row (trading-day position within the stock), so a gap in one stock's
history never mixes in another stock or calendar arithmetic. Where the stock has fewer than h later
rows the target is null: missing targets stay missing (the loss masks them), never filled.
Targets are raw returns, not normalised.
"""

from __future__ import annotations

import polars as pl


def target_names(horizons) -> list[str]:
    return [f"target_{int(h)}d" for h in horizons]


def add_targets(df: pl.LazyFrame | pl.DataFrame, horizons) -> pl.LazyFrame | pl.DataFrame:
    """Add ``target_{h}d`` for each h in ``horizons`` to a frame sorted by ``Code, Date``."""
    for h in horizons:
        if int(h) < 1:
            raise ValueError(f"data.build.horizons contains {h!r}: horizons must be positive integers")
    return df.with_columns(
        (pl.col("Close").shift(-int(h)).over("Code") / pl.col("Close") - 1).alias(name)
        for h, name in zip(horizons, target_names(horizons))
    )
