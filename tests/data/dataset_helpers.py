"""Shared builders for the dataset tests: tiny raw panels and the build config."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl

from atft.config import load_config


def build_cfg(*overrides: str):
    """``cfg.data.build`` composed from the shipped configs plus ``overrides``."""
    return load_config(list(overrides)).data.build


def random_walk_panel(n_stocks: int = 6, n_days: int = 90, seed: int = 0) -> pl.DataFrame:
    """A canonical raw panel: every stock on every weekday, OHLC consistent, 2 sectors, 2 markets."""
    rng = np.random.default_rng(seed)
    days = [date(2021, 1, 4) + timedelta(days=i) for i in range(n_days * 2)]
    days = [d for d in days if d.weekday() < 5][:n_days]
    lr = rng.normal(0, 0.02, (n_stocks, n_days))                                  # [N, D]
    close = 20 * np.exp(np.cumsum(lr, axis=1)) * rng.uniform(0.5, 2, (n_stocks, 1))
    open_ = close * np.exp(rng.normal(0, 0.01, close.shape))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, close.shape))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, close.shape))
    volume = np.round(rng.lognormal(12, 0.5, close.shape))
    return pl.DataFrame({
        "Code": np.repeat([f"C{i:02d}" for i in range(n_stocks)], n_days),
        "Date": days * n_stocks,
        "Open": open_.ravel(), "High": high.ravel(), "Low": low.ravel(), "Close": close.ravel(),
        "Volume": volume.ravel(),
        "Sector": np.repeat([f"Sec{i % 2}" for i in range(n_stocks)], n_days),
        "Market": np.repeat([f"Mkt{i % 3 == 0}" for i in range(n_stocks)], n_days),
    })
