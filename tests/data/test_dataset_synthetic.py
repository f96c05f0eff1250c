"""The synthetic market: deterministic, consistent OHLCV, fast, and its planted alpha is there."""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import pytest

from atft.cli import main
from atft.data.sources.synthetic import COMPONENTS, PARAMS, _alpha, _structure, synthetic_market

LEGACY = {"preset": "legacy"}  # the pre-preset market: these tests keep its numbers


def test_deterministic_per_seed():
    a, _, oa = synthetic_market(30, 60, seed=7, horizons=[1, 5])
    b, _, ob = synthetic_market(30, 60, seed=7, horizons=[1, 5])
    c, _, _ = synthetic_market(30, 60, seed=8, horizons=[1, 5])
    assert a.equals(b) and oa.equals(ob)
    assert not a["Close"].equals(c["Close"])


def test_ohlcv_consistent_and_static_columns():
    raw, info, oracle = synthetic_market(40, 80, seed=0, horizons=[1, 5, 10, 20])
    totals = ["oracle_1d", "oracle_5d", "oracle_10d", "oracle_20d"]
    parts = [f"oracle_{c}_{h}d" for h in (1, 5, 10, 20) for c in COMPONENTS]
    assert raw.height == 40 * 80 and oracle.columns == ["Code", "Date", *totals, *parts]
    assert info["components"] == list(COMPONENTS)
    assert raw.select((pl.col("High") >= pl.max_horizontal("Open", "Close")).all()).item()
    assert raw.select((pl.col("Low") <= pl.min_horizontal("Open", "Close")).all()).item()
    assert (raw["Low"] > 0).all() and (raw["Volume"] > 0).all()
    assert raw["Market"].n_unique() == 2 and raw["Sector"].n_unique() == info["sectors"] >= 2
    assert raw.group_by("Code").agg(pl.col("Sector").n_unique())["Sector"].max() == 1
    assert raw["Date"].dt.weekday().max() <= 5  # business days only


def test_volume_rises_with_absolute_return():
    raw, _, _ = synthetic_market(50, 120, seed=1, horizons=[1], params=LEGACY)
    r = raw.with_columns(
        (pl.col("Close") / pl.col("Close").shift(1).over("Code")).log().abs().alias("a"),
        (pl.col("Volume").log() - pl.col("Volume").log().mean().over("Code")).alias("v"),
    ).drop_nulls()
    assert np.corrcoef(r["a"], r["v"])[0, 1] > 0.1


def test_lead_lag_matrix_links_followers_to_cluster_leaders():
    s = _structure(np.random.default_rng(0), 120)
    W = s["W"]
    assert np.all(W[s["leader"]] == 0)  # leaders follow nobody
    followers = np.flatnonzero(~s["leader"])
    np.testing.assert_allclose(W[followers].sum(1), PARAMS["lam"])
    i = followers[0]
    assert set(np.flatnonzero(W[i])) == set(np.flatnonzero((s["cluster"] == s["cluster"][i]) & s["leader"]))
    lag = np.zeros((2, 120))
    lag[1, np.flatnonzero(W[i])] = 0.01  # leaders of i up 1% yesterday
    assert _alpha(lag[1], lag[0], W)[i] == pytest.approx(PARAMS["lam"] * 0.01)


def _daily_ic(frame: pl.DataFrame, a: str, b: str) -> float:
    ic = frame.group_by("Date").agg(pl.corr(a, b).alias("ic"))["ic"].fill_nan(None).drop_nulls()
    return float(ic.mean())


def test_build_writes_oracle_with_planted_ic(tmp_path):
    out = tmp_path / "syn.parquet"
    start = time.perf_counter()
    assert main(["dataset", "build", "--source", "synthetic", "--stocks", "120", "--days", "260", "--seed", "3",
                 "--out", str(out), "data.build.synthetic.preset=legacy"]) == 0
    assert time.perf_counter() - start < 20
    data = pl.read_parquet(out)
    oracle = pl.read_parquet(f"{out}.oracle.parquet")
    assert oracle.select("Code", "Date").equals(data.select("Code", "Date"))
    joined = data.join(oracle, on=["Code", "Date"])
    ic1 = _daily_ic(joined, "oracle_1d", "target_1d")
    assert 0.1 < ic1 < 0.3
    # the oracle carries information beyond the stock's own last return (the cross-stock lead-lag)
    assert ic1 > 2 * abs(_daily_ic(joined, "returns_1d", "target_1d"))
    assert _daily_ic(joined, "oracle_5d", "target_5d") > 0.05


def test_generation_is_fast():
    start = time.perf_counter()
    synthetic_market(300, 500, seed=0, horizons=[1, 5, 10, 20])
    assert time.perf_counter() - start < 5
