"""Split detection needs corroboration: a -50% crash on an opening gap is not a 2:1 split."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from dataset_helpers import build_cfg, random_walk_panel

from atft.data.build import dataset_frame
from atft.data.io import validate_panel
from atft.data.quality import format_quality_summary, quality_report

PRICES = ("Open", "High", "Low", "Close")
EVENT_DAY = 50


@pytest.fixture(scope="module")
def panel():
    raw, _ = validate_panel(random_walk_panel(n_stocks=5, n_days=90, seed=7), "panel")
    return raw


def _event(raw: pl.DataFrame, code: str, price: float, volume: list[float]) -> tuple[pl.DataFrame, object]:
    """From EVENT_DAY on, ``code``'s prices times ``price``; its volume on the event day and after times
    ``volume[0], volume[1], ...`` (the last multiplier holds for the rest of the panel)."""
    days = raw["Date"].unique().sort()
    day = days[EVENT_DAY]
    mult = np.ones(len(days))
    mult[EVENT_DAY:] = volume[-1]
    mult[EVENT_DAY:EVENT_DAY + len(volume)] = volume
    vol = pl.DataFrame({"Date": days, "_v": mult})
    after = (pl.col("Code") == code) & (pl.col("Date") >= day)
    out = raw.join(vol, on="Date", how="left").with_columns(
        *[pl.when(after).then(pl.col(c) * price).otherwise(pl.col(c)).alias(c) for c in PRICES],
        pl.when(pl.col("Code") == code).then(pl.col("Volume") * pl.col("_v")).otherwise(pl.col("Volume")).alias("Volume"),
    )
    return out.drop("_v"), day


def test_takeover_style_crash_is_not_a_split(panel):
    # a deal break: -50% at the open and the close, the stock trades 12x its usual volume, then calms down
    crash, day = _event(panel, "C02", 0.5, [12.0, 6.0, 4.0, 3.0, 2.0, 1.5, 1.2])
    data, groups, details = dataset_frame(crash, build_cfg(), normalize=False)
    assert details["split_events"].height == 0
    refused = details["split_refused"]
    assert refused.select("Code", "Date", "ratio").rows() == [("C02", day, "2:1")]
    assert refused["volume_ratio"][0] > 6 and refused["expected_volume_ratio"][0] == pytest.approx(2.0)
    assert ("C02", day) in details["large_moves"].select("Code", "Date").rows()
    stock = data.filter(pl.col("Code") == "C02").sort("Date")
    before = stock.filter(pl.col("Date") < day)["target_1d"][-1]
    assert before == pytest.approx(-0.5, abs=0.06)  # the loss stays in the target
    report = quality_report(data, groups, details, {}, {})
    assert report["split_events"] == [] and report["split_candidates_refused"][0]["Code"] == "C02"
    assert "not adjusted" in format_quality_summary(report)


def test_real_split_is_still_adjusted_with_its_evidence(panel):
    split, day = _event(panel, "C02", 0.5, [2.0])  # 2:1: half the price, twice the shares traded
    data, groups, details = dataset_frame(split, build_cfg(), normalize=False)
    events = details["split_events"]
    assert events.select("Code", "Date", "ratio").rows() == [("C02", day, "2:1")]
    assert abs(np.log(events["volume_ratio"][0] / 2.0)) < 1.1
    assert details["split_refused"].height == 0
    assert data.filter(pl.col("Code") == "C02")["target_1d"].abs().max() < 0.2
    event = quality_report(data, groups, details, {}, {})["split_events"][0]
    assert set(event) >= {"Code", "Date", "ratio", "raw_return", "open_gap", "volume_ratio", "expected_volume_ratio"}


def test_reverse_split_with_shrinking_volume_is_adjusted(panel):
    split, day = _event(panel, "C04", 10.0, [0.1])  # 1:10
    _, _, details = dataset_frame(split, build_cfg(), normalize=False)
    assert details["split_events"].select("Code", "Date", "ratio").rows() == [("C04", day, "1:10")]
