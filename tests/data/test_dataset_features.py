"""Targets and a handful of features against hand computations on a tiny panel."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import polars as pl
import pytest
from dataset_helpers import build_cfg, random_walk_panel

from atft.data.build import dataset_frame
from atft.data.io import validate_panel
from atft.data.targets import add_targets


@pytest.fixture(scope="module")
def tiny():
    raw = random_walk_panel(n_stocks=4, n_days=80, seed=1)
    raw = raw.filter(~((pl.col("Code") == "C03") & (pl.col("Date") == raw["Date"][10])))  # a gap in one stock
    raw, _ = validate_panel(raw, "tiny")
    data, groups, _ = dataset_frame(raw, build_cfg(), normalize=False)
    return raw, data, groups


def _stock(raw, data, code):
    r = raw.filter(pl.col("Code") == code).sort("Date")
    d = data.filter(pl.col("Code") == code).sort("Date")
    return r, d


def test_targets_hand_computed():
    days = [date(2024, 1, d) for d in (1, 2, 3, 4)]
    df = pl.DataFrame({"Code": ["A"] * 4 + ["B"] * 3, "Date": days + days[:3],
                       "Close": [10.0, 11.0, 12.1, 9.68, 5.0, 4.0, 6.0]})
    out = add_targets(df, [1, 2])
    assert out["target_1d"].to_list()[:3] == pytest.approx([0.1, 0.1, -0.2])
    assert out["target_1d"][3] is None and out["target_1d"][6] is None  # t+1 beyond the data: null
    assert out["target_1d"].to_list()[4:6] == pytest.approx([-0.2, 0.5])  # never crosses into stock A
    assert out["target_2d"].to_list()[:2] == pytest.approx([0.21, -0.12])
    assert out["target_2d"][2] is None and out["target_2d"][5] is None
    assert out.columns == ["Code", "Date", "Close", "target_1d", "target_2d"]  # no helper column left


def test_dataset_targets_on_the_global_date_axis(tiny):
    raw, data, _ = tiny
    r, d = _stock(raw, data, "C03")  # the stock with a missing day
    dates = raw["Date"].unique().sort().to_list()
    close = dict(zip(r["Date"].to_list(), r["Close"].to_list()))
    for h in (1, 5, 10, 20):
        want = []
        for t in r["Date"].to_list():
            k = dates.index(t) + h  # the h-th next trading day of the panel, not the stock's next row
            ahead = close.get(dates[k]) if k < len(dates) else None
            want.append(np.nan if ahead is None else ahead / close[t] - 1)
        got = d[f"target_{h}d"].to_numpy().astype(float)
        np.testing.assert_allclose(got, want, rtol=1e-5, equal_nan=True)
        assert d[f"target_{h}d"].dtype == pl.Float32
        assert np.isnan(want).sum() == h + (h <= 10)  # h past the data, 1 landing on the day-10 gap


def test_features_hand_computed(tiny):
    raw, data, _ = tiny
    r, d = _stock(raw, data, "C01")
    c, o, v = r["Close"].to_numpy(), r["Open"].to_numpy(), r["Volume"].to_numpy()
    t = 40
    assert d["returns_1d"][t] == pytest.approx(c[t] / c[t - 1] - 1, rel=1e-5)
    assert d["returns_5d"][t] == pytest.approx(c[t] / c[t - 5] - 1, rel=1e-5)
    assert d["returns_20d"][t] == pytest.approx(c[t] / c[t - 20] - 1, rel=1e-5)
    lr = np.log(c[t - 19 : t + 1] / c[t - 20 : t])
    assert d["realized_vol_20d"][t] == pytest.approx(lr.std(ddof=1) * math.sqrt(252), rel=1e-5)
    assert d["ma_gap_5d"][t] == pytest.approx(c[t] / c[t - 4 : t + 1].mean() - 1, rel=1e-4, abs=1e-7)
    assert d["overnight_gap_1d"][t] == pytest.approx(o[t] / c[t - 1] - 1, rel=1e-5)
    assert d["intraday_return_1d"][t] == pytest.approx(c[t] / o[t] - 1, rel=1e-5)
    assert d["volume_ratio_5d"][t] == pytest.approx(v[t] / v[t - 4 : t + 1].mean(), rel=1e-5)
    ret = np.diff(c[t - 14 : t + 1]) / c[t - 14 : t]
    gain, loss = np.clip(ret, 0, None).mean(), np.clip(-ret, 0, None).mean()
    assert d["rsi_14d"][t] == pytest.approx(100 * gain / (gain + loss), rel=1e-5)


def test_market_feature_is_equal_weight_mean(tiny):
    raw, data, _ = tiny
    ret = raw.sort("Code", "Date").with_columns((pl.col("Close") / pl.col("Close").shift(1).over("Code") - 1).alias("r"))
    day = raw["Date"].unique().sort()[30]
    want = ret.filter(pl.col("Date") == day)["r"].mean()
    got = data.filter(pl.col("Date") == day)["mkt_return_1d"]
    assert got.n_unique() == 1 and got[0] == pytest.approx(want, rel=1e-5)


def test_beta_to_market_hand_computed(tiny):
    raw, data, _ = tiny
    ret = raw.sort("Code", "Date").with_columns((pl.col("Close") / pl.col("Close").shift(1).over("Code") - 1).alias("r"))
    mkt = ret.group_by("Date").agg(pl.col("r").mean().alias("m"))
    s = ret.filter(pl.col("Code") == "C00").join(mkt, on="Date").sort("Date")
    t = 50
    r, m = s["r"].to_numpy()[t - 19 : t + 1], s["m"].to_numpy()[t - 19 : t + 1]
    beta = np.cov(r, m, ddof=0)[0, 1] / m.var()
    d = data.filter(pl.col("Code") == "C00").sort("Date")
    assert d["beta_20d"][t] == pytest.approx(beta, rel=1e-4)


def test_incomplete_windows_are_null(tiny):
    raw, data, _ = tiny
    _, d = _stock(raw, data, "C02")
    assert d["returns_1d"][0] is None and d["returns_1d"][1] is not None
    assert d["returns_20d"][19] is None and d["returns_20d"][20] is not None
    assert d["realized_vol_60d"][59] is None and d["realized_vol_60d"][60] is not None
    assert d["ma_gap_60d"][58] is None and d["ma_gap_60d"][59] is not None


def test_feature_set_contract(tiny):
    _, data, groups = tiny
    features = [f for names in groups.values() for f in names]
    assert len(features) >= 60 and len(set(features)) == len(features)
    assert {"returns_1d", "returns_5d", "returns_20d", "realized_vol_20d"} <= set(features)
    assert not [f for f in features if "target" in f]
    assert {"returns", "volatility", "moving_average", "oscillators", "volume", "market", "beta", "sector"} <= set(groups)
    assert all(data[f].dtype == pl.Float32 for f in features)
    assert data.select(pl.col(features).is_nan().any()).sum_horizontal().item() == 0
    assert data.select(pl.col(features).is_infinite().any()).sum_horizontal().item() == 0


def test_cs_normalize_winsorises_then_standardises():
    from atft.data.cross_section import cs_normalize

    x = [1.0, 2.0, 3.0, 4.0, 100.0, None]
    df = pl.DataFrame({"Date": [1] * 6 + [2] * 6, "f": x + [5.0] * 5 + [None]})
    z = cs_normalize(df.lazy(), ["f"], sigma=2.0).collect()
    day1 = z.filter(pl.col("Date") == 1)["f"]
    # median 3, MAD 1 -> the outlier is clipped to 3 + 2 * 1.4826 = 5.9652 before the z-score
    clipped = np.array([1.0, 2.0, 3.0, 4.0, 3 + 2 * 1.4826])
    want = (clipped - clipped.mean()) / clipped.std(ddof=1)
    np.testing.assert_allclose(day1.to_numpy()[:5], want, rtol=1e-9)
    assert day1[5] is None
    day2 = z.filter(pl.col("Date") == 2)["f"]
    assert day2.to_list()[:5] == [0.0] * 5 and day2[5] is None  # no cross-sectional variation -> 0
    ranked = cs_normalize(df.lazy(), ["f"], method="rank").collect().filter(pl.col("Date") == 1)["f"]
    assert ranked.drop_nulls().mean() == pytest.approx(0) and ranked.drop_nulls().std() == pytest.approx(1)
    assert ranked.to_list()[:5] == sorted(ranked.to_list()[:5])
