"""Generic and J-Quants-named raw files; split handling by AdjustmentFactor, Adjustment* or detection."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from dataset_helpers import build_cfg, random_walk_panel

from atft.config import load_config
from atft.data.build import build_dataset, dataset_frame
from atft.data.io import read_raw_file, validate_panel

PRICES = ("Open", "High", "Low", "Close")


@pytest.fixture(scope="module")
def original():
    raw, _ = validate_panel(random_walk_panel(n_stocks=5, n_days=90, seed=5), "panel")
    return raw


def _with_split(raw: pl.DataFrame, code: str, day_index: int, k: float) -> tuple[pl.DataFrame, object]:
    """Raw prices of ``code`` divided by k (volume times k) from its ``day_index``-th day: a k-for-1 split."""
    day = raw["Date"].unique().sort()[day_index]
    after = (pl.col("Code") == code) & (pl.col("Date") >= day)
    return raw.with_columns(
        *[pl.when(after).then(pl.col(c) / k).otherwise(pl.col(c)).alias(c) for c in PRICES],
        pl.when(after).then(pl.col("Volume") * k).otherwise(pl.col("Volume")).alias("Volume"),
    ), day


def _assert_same_features(a: pl.DataFrame, b: pl.DataFrame, groups) -> None:
    for f in [f for names in groups.values() for f in names] + ["target_1d", "target_5d", "target_20d"]:
        x, y = a[f].to_numpy().astype(float), b[f].to_numpy().astype(float)
        np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5, equal_nan=True, err_msg=f)


def test_adjustment_factor_neutralises_split(original):
    split, day = _with_split(original, "C02", 50, 2.0)
    split = split.with_columns(pl.when((pl.col("Code") == "C02") & (pl.col("Date") == day)).then(0.5)
                               .otherwise(1.0).alias("AdjustmentFactor"))
    base, groups, _ = dataset_frame(original, build_cfg(), normalize=False)
    got, _, details = dataset_frame(split, build_cfg(), normalize=False)
    assert "AdjustmentFactor" in details["adjustment"] and details["split_events"].height == 0
    _assert_same_features(base, got, groups)


def test_adjustment_prices_preferred(original):
    split, _ = _with_split(original, "C01", 30, 3.0)
    split = split.with_columns(*[original[c].alias(f"Adjustment{c}") for c in (*PRICES, "Volume")])
    base, groups, _ = dataset_frame(original, build_cfg(), normalize=False)
    got, _, details = dataset_frame(split, build_cfg(), normalize=False)
    assert "Adjustment*" in details["adjustment"]
    _assert_same_features(base, got, groups)


def test_detected_split_without_provider_adjustment(original):
    split, day = _with_split(original, "C03", 40, 2.0)
    base, groups, _ = dataset_frame(original, build_cfg(), normalize=False)
    got, _, details = dataset_frame(split, build_cfg(), normalize=False)
    events = details["split_events"]
    assert events.select("Code", "Date", "ratio").rows() == [("C03", day, "2:1")]
    _assert_same_features(base, got, groups)
    off, _, none = dataset_frame(split, build_cfg("data.build.detect_splits=false"), normalize=False)
    assert none["split_events"].height == 0 and off["target_1d"].min() < -0.4  # the artefact stays in


def test_generic_lowercase_csv_builds(tmp_path, original):
    path = tmp_path / "generic.csv"
    original.drop("Sector", "Market").rename({"Code": "ticker", "Date": "date", **{c: c.lower() for c in (*PRICES, "Volume")}}) \
        .with_columns(pl.col("date").dt.strftime("%Y/%m/%d")).write_csv(path)
    out = tmp_path / "ds.parquet"
    report = build_dataset(load_config([f"data.build.source={path}", f"data.build.out={out}"]))
    data = pl.read_parquet(out)
    assert report["stocks"] == 5 and data.height == original.height
    assert data["Sector"].null_count() == data.height and data.schema["Date"] == pl.Date  # no label, no group
    assert data["sector_return_5d"].null_count() == data.height
    meta = json.loads((tmp_path / "ds.parquet.meta.json").read_text())
    assert meta["source"]["name"] == "file" and meta["rows"] == data.height


def test_jquants_named_parquet(tmp_path, original):
    path = tmp_path / "quotes.parquet"
    jq = original.rename({"Market": "MarketCodeName", "Sector": "Sector33CodeName"}).with_columns(
        (pl.col("Close") * pl.col("Volume")).alias("TurnoverValue"),
        pl.col("Date").dt.strftime("%Y-%m-%d"),
        pl.col("Code").cast(pl.Utf8),
    )
    # an untraded day: J-Quants reports null prices and zero volume
    jq = jq.with_columns(*[pl.when(pl.int_range(pl.len()) == 7).then(None).otherwise(pl.col(c)).alias(c) for c in PRICES])
    jq.write_parquet(path)
    raw = read_raw_file(path)
    assert {"TurnoverValue", "Sector", "Market"} <= set(raw.columns)
    clean, dropped = validate_panel(raw, str(path))
    assert clean.height == original.height - 1 and list(dropped.values()) == [1]
