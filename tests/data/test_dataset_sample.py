"""The sample S&P 500 build end to end: outputs, split handling, per-date normalisation."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import polars as pl
import pytest
from dataset_helpers import build_cfg

from atft.config import load_config
from atft.data.build import build_dataset, dataset_frame
from atft.data.io import validate_panel
from atft.data.quality import format_quality_summary
from atft.data.sources.sample import load_sample
from atft.errors import InputError


@pytest.fixture(scope="module")
def sample_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "sample.parquet"
    report = build_dataset(load_config(["data.build.source=sample", f"data.build.out={out}"]))
    return out, report, pl.read_parquet(out), json.loads(out.with_name(out.name + ".meta.json").read_text())


@pytest.fixture(scope="module")
def sample_raw_features():
    raw, _ = validate_panel(load_sample()[0], "sample")
    return dataset_frame(raw, build_cfg(), normalize=False)


def test_sample_outputs(sample_build):
    out, report, data, meta = sample_build
    assert (report["rows"], report["stocks"], report["days"]) == (data.height, 524, 245)
    assert data["Code"].n_unique() == 524 and data["Date"].n_unique() == 245
    assert data.schema["Date"] == pl.Date and data.schema["Sector"] == pl.Utf8 and data.schema["Market"] == pl.Utf8
    assert set(data["Market"].unique()) == {"SP500"}
    assert data.filter(pl.col("Code") == "AAPL")["Sector"][0] == "Information Technology"
    quality = json.loads(out.with_name(out.name + ".quality.json").read_text())
    assert quality["rows"] == data.height and quality["split_events"] == report["split_events"]
    assert meta["features"] == [c for c in data.columns if c not in ("Code", "Date", "Sector", "Market")
                                and not c.startswith("target_")]
    assert meta["horizons"] == [1, 5, 10, 20] and meta["targets"] == [f"target_{h}d" for h in (1, 5, 10, 20)]
    assert set(meta["groups"]) >= {"returns", "market"} and "market" in meta["normalization"]["raw_market_wide"]["groups"]
    assert not list(out.parent.glob("*.tmp"))


def test_sample_split_events_flagged(sample_build):
    _, report, _, _ = sample_build
    events = {(e["Code"], e["Date"]): e for e in report["split_events"]}
    # the six known splits, each corroborated by its volume (the evidence is listed with it)
    assert {(c, d, e["ratio"]) for (c, d), e in events.items()} == {
        ("ESRX", "2010-06-08", "2:1"), ("GIS", "2010-06-09", "2:1"), ("DHR", "2010-06-14", "2:1"),
        ("ETFC", "2010-06-30", "1:10"), ("STR", "2010-07-01", "3:1"), ("WY", "2010-07-20", "3:1")}
    assert all(e["volume_ratio"] > 0 and e["expected_volume_ratio"] > 0 for e in events.values())
    assert events[("ETFC", "2010-06-30")]["ratio"] == "1:10"
    assert events[("ETFC", "2010-06-30")]["raw_return"] > 5  # the raw move was +732%
    assert events[("GIS", "2010-06-09")]["ratio"] == "2:1"
    assert events[("DHR", "2010-06-14")]["ratio"] == "2:1"
    # real (non-split) jumps beyond the threshold are reported, not adjusted
    assert ("MFE", "2010-08-19") in {(e["Code"], e["Date"]) for e in report["large_moves_kept"]}


def test_sample_no_fake_returns(sample_build, sample_raw_features):
    data, _, _ = sample_raw_features
    assert data["returns_1d"].abs().max() <= 0.4 + 1e-6
    etfc = data.filter(pl.col("Code") == "ETFC").sort("Date")
    around = etfc.filter(pl.col("Date").is_between(pl.date(2010, 6, 20), pl.date(2010, 7, 10)))
    assert around["returns_1d"].abs().max() < 0.25
    # ETFC has no rows from 2010-06-02 to 06-29 (the reverse split lands on 06-30): the 1-day target of
    # 06-01 is null, not the month to 06-30, and no target near the split shows the raw +732%
    before = etfc.filter(pl.col("Date") < pl.date(2010, 6, 30))
    assert before["Date"][-1] == date(2010, 6, 1) and before["target_1d"][-1] is None
    assert max(etfc[f"target_{h}d"].abs().max() for h in (1, 5, 10, 20)) < 0.4
    gis = sample_build[2].filter(pl.col("Code") == "GIS")
    assert gis["target_1d"].abs().max() < 0.2 and gis["target_5d"].abs().max() < 0.3


def test_per_date_cross_sectional_normalisation(sample_build):
    _, _, data, meta = sample_build
    per_stock = [f for g in meta["normalization"]["cross_sectional"]["groups"] for f in meta["groups"][g]]
    stats = data.group_by("Date").agg(
        *[pl.col(f).mean().alias(f"{f}|mean") for f in per_stock],
        *[pl.col(f).std().alias(f"{f}|std") for f in per_stock],
        *[pl.col(f).count().alias(f"{f}|n") for f in per_stock],
    )
    checked = 0
    for f in per_stock:
        s = stats.filter(pl.col(f"{f}|n") >= 30)
        std = s[f"{f}|std"].to_numpy()
        varying = std > 0.5  # dates where the cross-section varies (else all 0 by design)
        assert np.abs(s[f"{f}|mean"].to_numpy()).max() < 1e-4, f
        assert np.abs(std[varying] - 1).max() < 1e-3, f
        assert varying.mean() > 0.9, f
        checked += varying.sum()
    assert checked > 10_000
    sigma = meta["normalization"]["cross_sectional"]["winsorize_sigma"]
    assert data.select(pl.max_horizontal(pl.col(per_stock).abs().max())).item() < 3 * sigma


def test_market_features_kept_raw_and_constant_per_date(sample_build):
    _, _, data, meta = sample_build
    market = meta["groups"]["market"]
    per_date = data.group_by("Date").agg(pl.col(market).n_unique())
    assert per_date.select(pl.max_horizontal(pl.col(market).max())).item() == 1
    assert data["mkt_breadth_1d"].drop_nulls().is_between(0, 1).all()


def test_quality_summary_lists_events(sample_build):
    text = format_quality_summary(sample_build[1])
    assert "ETFC 2010-06-30 ratio 1:10" in text and "stocks 524" in text and "MFE 2010-08-19" in text


def test_sample_stocks_missing_from_the_sector_file_have_no_sector(sample_build):
    """The XML snapshot omits the tickers that later left the index (MFE, GENZ, XTO, ...): they get no
    sector and no sector features, never a shared group of future leavers."""
    _, _, data, meta = sample_build
    assert "Unknown" not in set(data["Sector"].drop_nulls())
    leavers = data.filter(pl.col("Sector").is_null())
    assert leavers["Code"].n_unique() == 82 and {"MFE", "GENZ", "XTO"} <= set(leavers["Code"])
    assert all(leavers[f].null_count() == leavers.height for f in meta["groups"]["sector"])


def test_sample_without_sector_labels():
    """``data.build.sample_sectors=none`` drops the snapshot's labels altogether (no label look-ahead)."""
    raw, info = load_sample("none")
    assert raw["Sector"].null_count() == raw.height and info["sectors"] == "none"
    with pytest.raises(InputError, match="sample_sectors='xml'"):
        load_sample("xml")
