"""The group-wise build (``pipeline.assemble``) gives the numbers of the one-plan polars build.

The reference is the build as it was before ``assemble``: ``compute_features`` -> ``add_targets`` ->
``cs_normalize`` as one lazy query, cast to float32. The panel has gaps (rows dropped at random), stocks
without a sector, missing volumes and a stock listed late, so the grid, the target search and the
per-date statistics all meet missing cells.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from atft.config import load_config
from atft.data.adjustment import adjust_prices
from atft.data.build import MARKET_WIDE_GROUPS, dataset_frame
from atft.data.cross_section import cs_normalize
from atft.data.features import compute_features
from atft.data.io import validate_panel
from atft.data.pipeline import group_means
from atft.data.sources.synthetic import synthetic_market
from atft.data.targets import add_targets, target_names


def _cfg(*overrides: str):
    return load_config(["data.build.source=synthetic", *overrides]).data.build


def reference_frame(raw: pl.DataFrame, build_cfg, normalize: bool = True) -> pl.DataFrame:
    """The dataset frame exactly as the one-plan build computed it."""
    horizons = [int(h) for h in build_cfg.horizons]
    adjusted = adjust_prices(raw, build_cfg)[0]
    lf = adjusted.lazy().with_columns(
        (pl.col("Close") * pl.col("Volume")).alias("DollarVolume"),
        *[pl.col(c).cast(pl.Utf8) for c in ("Sector", "Market")],
    )
    lf, groups = compute_features(lf, jump_clip=float(build_cfg.split_jump_threshold))
    lf = add_targets(lf, horizons)
    if normalize:
        per_stock = [f for g, names in groups.items() if g not in MARKET_WIDE_GROUPS for f in names]
        lf = cs_normalize(lf, per_stock, float(build_cfg.winsorize_sigma), str(build_cfg.cs_method))
    features = [f for names in groups.values() for f in names]
    return lf.select("Code", "Date", "Sector", "Market",
                     *[pl.col(c).cast(pl.Float32) for c in features + target_names(horizons)]
                     ).sort("Code", "Date").collect()


@pytest.fixture(scope="module")
def gappy_raw() -> pl.DataFrame:
    raw, _, _ = synthetic_market(40, 160, seed=3, horizons=[1, 5])
    rng = np.random.default_rng(0)
    raw = raw.filter(pl.Series(rng.random(raw.height) > 0.05))                  # 5% of rows missing
    raw = raw.filter((pl.col("Code") != "S0007") | (pl.col("Date") > pl.date(2016, 3, 1)))  # listed late
    raw = raw.with_columns(
        pl.when(pl.col("Code").is_in(["S0001", "S0002"])).then(None).otherwise(pl.col("Sector")).alias("Sector"),
        pl.when(pl.Series(rng.random(raw.height) < 0.01)).then(None).otherwise(pl.col("Volume")).alias("Volume"),
    )
    return validate_panel(raw, "synthetic")[0]


def _assert_same(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert got.columns == want.columns
    assert got.select("Code", "Date", "Sector", "Market").equals(want.select("Code", "Date", "Sector", "Market"))
    for c in got.columns[4:]:
        assert got[c].dtype == pl.Float32, c
        assert got[c].is_null().to_list() == want[c].is_null().to_list(), c   # same missing cells
        a, b = got[c].to_numpy(), want[c].to_numpy()
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6, equal_nan=True, err_msg=c)


@pytest.mark.parametrize("method", ["zscore", "rank"])
def test_build_matches_one_plan_reference(gappy_raw, method):
    cfg = _cfg("data.build.horizons=[1,5,20]", f"data.build.cs_method={method}")
    got, groups, _ = dataset_frame(gappy_raw, cfg)
    _assert_same(got, reference_frame(gappy_raw, cfg))
    assert got.height == gappy_raw.height and len(got.columns) == 4 + sum(map(len, groups.values())) + 3


def test_raw_features_match_one_plan_reference(gappy_raw):
    cfg = _cfg("data.build.horizons=[1,5]")
    got, _, _ = dataset_frame(gappy_raw, cfg, normalize=False)
    _assert_same(got, reference_frame(gappy_raw, cfg, normalize=False))


def test_window_without_down_move_has_zero_downside_vol():
    # 30 days of falls, then 40 days of rises: from day 50 on, the 20-day window holds no down move; the
    # rolling mean of squares rounds to -1e-18 there on this path (its square root was NaN -> null)
    ret = np.concatenate([-np.abs(np.random.default_rng(6).normal(0, 0.1, 30)), np.full(40, 0.01)])
    close = 100 * np.cumprod(1 + ret)
    raw = pl.DataFrame({
        "Code": "B", "Date": pl.date_range(pl.date(2020, 1, 1), pl.date(2020, 3, 10), "1d", eager=True),
        "Close": close, "Open": close, "High": close * 1.01, "Low": close * 0.99, "Volume": 1e6,
        "Sector": "S", "Market": "M",
    })
    got, _, _ = dataset_frame(validate_panel(raw, "t")[0], _cfg("data.build.detect_splits=false"), normalize=False)
    vol = got["downside_vol_20d"]
    assert vol[:19].is_null().all() and vol[19:].is_not_null().all()  # the first row counts as no move
    assert (vol[50:] == 0).all()


def test_group_means_sum_in_row_order():
    # the build's market and sector means: the same bits on every run, because the sum runs in row order
    # (polars' group aggregations sum in an order that varies between runs on large frames)
    rng = np.random.default_rng(4)
    values = rng.normal(0, 1, 5000) * 10.0 ** rng.integers(-8, 8, 5000)
    values[rng.random(5000) < 0.1] = np.nan
    group = rng.integers(-1, 40, 5000)                                     # -1: in no group
    got = group_means(values, group, 42)                                   # groups 40, 41 are empty
    for g in range(42):
        total, count = 0.0, 0
        for v in values[group == g]:
            if not np.isnan(v):
                total, count = total + v, count + 1
        assert (np.isnan(got[g]) and count == 0) or got[g] == total / count, g


def test_build_without_any_sector(gappy_raw):
    cfg = _cfg("data.build.horizons=[1,5]")
    raw = gappy_raw.with_columns(pl.lit(None, dtype=pl.Utf8).alias("Sector"))
    got, groups, _ = dataset_frame(raw, cfg)
    assert all(got[c].null_count() == got.height for c in groups["sector"])
    _assert_same(got, reference_frame(raw, cfg))
