"""Point-in-time labels (no shared "Unknown" group) and missing volumes kept missing."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
from dataset_helpers import build_cfg, random_walk_panel

from atft.config import load_config
from atft.data.build import build_dataset, dataset_frame
from atft.data.io import validate_panel

UNLABELLED = ["C01", "C02"]  # one of each sector in ``random_walk_panel``


def test_unlabelled_stocks_are_in_no_sector():
    raw = random_walk_panel(n_stocks=8, n_days=60, seed=2)
    raw = raw.with_columns(pl.when(pl.col("Code").is_in(UNLABELLED)).then(None).otherwise(pl.col("Sector"))
                           .alias("Sector"))
    raw, _ = validate_panel(raw, "panel")
    data, groups, _ = dataset_frame(raw, build_cfg(), normalize=False)
    sector = groups["sector"]
    mine = data.filter(pl.col("Code").is_in(UNLABELLED))
    assert mine["Sector"].null_count() == mine.height
    assert all(mine[f].null_count() == mine.height for f in sector)  # no label: no sector features
    # the labelled stocks' sector aggregates are those of a panel without the unlabelled stocks
    alone, _, _ = dataset_frame(raw.filter(~pl.col("Code").is_in(UNLABELLED)), build_cfg(), normalize=False)
    labelled = data.filter(~pl.col("Code").is_in(UNLABELLED))
    for f in ("sector_return_5d", "sector_rel_return_1d", "sector_rel_vol_20d"):
        assert labelled[f].null_count() < labelled.height
        np.testing.assert_allclose(labelled[f].to_numpy(), alone[f].to_numpy(), rtol=1e-5, equal_nan=True, err_msg=f)


def _with_null_volume(code: str, day_index: int) -> tuple[pl.DataFrame, object]:
    raw = random_walk_panel(n_stocks=4, n_days=70, seed=4)
    day = raw["Date"].unique().sort()[day_index]
    hole = (pl.col("Code") == code) & (pl.col("Date") == day)
    return raw.with_columns(pl.when(hole).then(None).otherwise(pl.col("Volume")).alias("Volume")), day


def test_null_volume_stays_null_and_is_counted(tmp_path):
    raw, day = _with_null_volume("C01", 40)
    path, out = tmp_path / "raw.parquet", tmp_path / "ds.parquet"
    raw.write_parquet(path)
    report = build_dataset(load_config([f"data.build.source={path}", f"data.build.out={out}"]))
    quality = json.loads(out.with_name(out.name + ".quality.json").read_text())
    assert report["null_volume_rows"] == quality["null_volume_rows"] == 1
    valid, _ = validate_panel(raw, "panel")
    assert valid["Volume"].null_count() == 1  # never a silent 0
    data, _, _ = dataset_frame(valid, build_cfg(), normalize=False)
    stock = data.filter(pl.col("Code") == "C01").sort("Date").with_row_index("i")
    at = stock.filter(pl.col("Date") == day)["i"][0]
    rows = stock["i"].to_numpy()
    for f, k in (("volume_ratio_5d", 5), ("volume_ratio_20d", 20), ("log_dollar_volume_20d", 20),
                 ("amihud_illiq_20d", 20), ("volume_zscore_20d", 20)):
        x = stock[f].to_numpy().astype(float)
        window = (rows >= at) & (rows < at + k)  # every window that holds the missing volume
        assert np.isnan(x[window]).all(), f
        assert np.isfinite(x[rows == at + k]).all() and np.isfinite(x[rows == at - 1]).all(), f
    others = data.filter((pl.col("Code") != "C01") & (pl.col("Date") == day))
    assert others["volume_ratio_5d"].null_count() == 0
