"""Fixtures for ``atft tune`` tests: the tiny synthetic market, and the same with a planted signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from atft.config import load_config
from atft.data.build import build_dataset


@pytest.fixture(scope="session")
def market(tmp_path_factory) -> Path:
    """The synthetic market: 20 stocks x 160 business days, horizons 1 and 5."""
    path = tmp_path_factory.mktemp("market") / "syn.parquet"
    build_dataset(load_config(["data.build.source=synthetic", f"data.build.out={path}", "data.build.stocks=20",
                               "data.build.days=160", "data.build.seed=3", "data.build.horizons=[1,5]"]))
    return path


@pytest.fixture(scope="session")
def planted_market(market) -> Path:
    """The market plus ``planted``: next-day return rank + noise (daily IC ~0.3, below the leakage screen)."""
    path = market.with_name("planted.parquet")
    frame = pl.read_parquet(market)
    noise = np.random.default_rng(0).standard_normal(frame.height)
    rank = frame.select(pl.col("target_1d").rank().over("Date") / pl.len().over("Date") - 0.5).to_series()
    frame.with_columns(planted=pl.Series((rank.fill_null(0.0).to_numpy() * 1.1 + noise).astype(np.float32))
                       ).write_parquet(path)
    return path
