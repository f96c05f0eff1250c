"""Leakage: changing any raw value after a cutoff moves no feature at or before it (bit for bit)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from dataset_helpers import build_cfg, random_walk_panel

from atft.data.build import dataset_frame
from atft.data.io import validate_panel
from atft.data.sources.sample import load_sample
from atft.data.sources.synthetic import synthetic_market

HORIZONS = (1, 5, 10, 20)


def _perturb_after(raw: pl.DataFrame, cutoff, seed: int) -> pl.DataFrame:
    """Scale every price and volume after ``cutoff`` by independent random factors, and plant a 2:1
    split (all prices halved, volume doubled, from 4 days after the cutoff) in the first stock.

    (Day 4, not 3: on day 3 the first stock of the seed-3 panel trades 4x its usual volume, so a split
    there would double an already 4x day - causally indistinguishable from a crash, and refused.)"""
    rng = np.random.default_rng(seed)
    after = (raw["Date"] > cutoff).to_numpy()
    out = {}
    for col in ("Open", "High", "Low", "Close", "Volume"):
        x = raw[col].to_numpy().copy()
        x[after] *= rng.uniform(0.93, 1.07, after.sum())
        out[col] = x
    out["High"] = np.maximum.reduce([out["High"], out["Open"], out["Close"]])
    out["Low"] = np.minimum.reduce([out["Low"], out["Open"], out["Close"]])
    later = raw["Date"].unique().sort()
    split_day = later.filter(later > cutoff)[4]
    split = ((raw["Code"] == raw["Code"][0]) & (raw["Date"] >= split_day)).to_numpy()
    for col in ("Open", "High", "Low", "Close"):
        out[col][split] *= 0.5
    out["Volume"][split] *= 2.0
    return raw.with_columns(*[pl.Series(k, v) for k, v in out.items()])


def _check_no_leak(raw: pl.DataFrame, cutoff, cfg, seed=0):
    base, groups, _ = dataset_frame(raw, cfg)
    moved, _, details = dataset_frame(_perturb_after(raw, cutoff, seed), cfg)
    features = [f for names in groups.values() for f in names]
    assert base.select("Code", "Date").equals(moved.select("Code", "Date"))
    past = (base["Date"] <= cutoff).to_numpy()
    a, b = base.filter(past), moved.filter(past)
    for f in features:  # bit-identical, nulls in the same places
        assert a[f].equals(b[f], check_names=True), f
    assert not base.filter(~past)["returns_1d"].equals(moved.filter(~past)["returns_1d"])  # the future did move
    for h in HORIZONS:
        col = f"target_{h}d"
        # rows whose t+h (h rows later in the same stock) is still <= cutoff
        ahead = base.with_columns(pl.col("Date").shift(-h).over("Code").alias("ahead"))["ahead"]
        ok = (ahead.is_not_null() & (ahead <= cutoff)).to_numpy()
        assert ok.sum() > 0
        assert base.filter(ok)[col].equals(moved.filter(ok)[col]), col
    return details


def test_no_leakage_random_panel():
    raw, _ = validate_panel(random_walk_panel(n_stocks=12, n_days=140, seed=3), "panel")
    cutoff = raw["Date"].unique().sort()[100]
    details = _check_no_leak(raw, cutoff, build_cfg())
    # the planted post-cutoff split was detected - and still did not move the past
    assert details["split_events"].height == 1 and details["split_events"]["Date"][0] > cutoff


@pytest.mark.slow
def test_no_leakage_sample_panel():
    raw, _ = validate_panel(load_sample()[0], "sample")
    cutoff = raw["Date"].unique().sort()[150]
    _check_no_leak(raw, cutoff, build_cfg(), seed=1)


def test_no_leakage_rich_synthetic_panel():
    # the planted market (sectors, volume spikes and droughts) through the same pipeline: the past holds still
    raw, _ = validate_panel(synthetic_market(16, 140, seed=4, horizons=[1])[0], "synthetic")
    cutoff = raw["Date"].unique().sort()[100]
    _check_no_leak(raw, cutoff, build_cfg(), seed=2)
