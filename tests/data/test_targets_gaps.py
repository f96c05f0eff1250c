"""Targets step along the panel's global trading days: a target landing on a stock's missing day is null."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from atft.data.panel import graph_returns
from atft.data.targets import add_targets

DAYS = [date(2024, 3, d) for d in (4, 5, 6, 7, 8, 11, 12, 13)]  # 8 trading days (a weekend in between)
CLOSE_A = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0]  # every day
CLOSE_B = [20.0, 22.0, 21.0, 18.0, 19.0, None, 24.0, 23.0]  # no row on day 5 (2024-03-11)


def _panel() -> pl.DataFrame:
    rows = [("A", d, c) for d, c in zip(DAYS, CLOSE_A)] + [("B", d, c) for d, c in zip(DAYS, CLOSE_B) if c]
    return pl.DataFrame(rows, schema=["Code", "Date", "Close"], orient="row").sort("Code", "Date")


def _expected(closes: list[float | None], h: int) -> list[float | None]:
    """By hand on the global axis: day k -> day k+h, null if either day has no row or k+h is past the end."""
    out = []
    for k, c in enumerate(closes):
        if c is None:
            continue
        ahead = closes[k + h] if k + h < len(closes) else None
        out.append(None if ahead is None else ahead / c - 1)
    return out


def _check(got: list, want: list) -> None:
    assert [g is None for g in got] == [w is None for w in want]
    assert [g for g in got if g is not None] == pytest.approx([w for w in want if w is not None])


def test_target_landing_in_the_gap_is_null_not_the_next_row():
    out = add_targets(_panel(), [1, 2, 5])
    b = out.filter(pl.col("Code") == "B")
    assert b["Date"].to_list() == [DAYS[i] for i in (0, 1, 2, 3, 4, 6, 7)]
    assert b["target_1d"][4] is None  # day 4 -> day 5: B has no row on day 5 (its next row gave 24/19-1)
    assert b["target_1d"][3] == pytest.approx(19 / 18 - 1)
    assert b["target_1d"][5] == pytest.approx(23 / 24 - 1)  # day 6 -> day 7, right after the gap
    assert b["target_1d"][6] is None  # past the data
    assert b["target_2d"][3] is None and b["target_2d"][4] == pytest.approx(24 / 19 - 1)  # 4 -> 6 is 2 days
    assert b["target_5d"][0] is None  # day 0 -> day 5 lands in the gap (its 5th next row gave 23/20-1)
    assert b["target_5d"][1] == pytest.approx(24 / 22 - 1)  # day 1 -> day 6: both closes exist
    assert b["target_5d"][2] == pytest.approx(23 / 21 - 1)
    assert b["target_5d"].to_list()[3:] == [None] * 4
    for h in (1, 2, 5):
        _check(b[f"target_{h}d"].to_list(), _expected(CLOSE_B, h))
        _check(out.filter(pl.col("Code") == "A")[f"target_{h}d"].to_list(), _expected(CLOSE_A, h))
    assert out.columns == ["Code", "Date", "Close", "target_1d", "target_2d", "target_5d"]


def test_lazy_frame_gives_the_same_targets():
    eager = add_targets(_panel(), [1, 5])
    lazy = add_targets(_panel().lazy(), [1, 5]).collect()
    assert lazy.equals(eager)


def test_graph_return_fallback_is_close_over_previous_close_on_both_days():
    out = add_targets(_panel(), [1])
    # dense [D, N, H] exactly as the loader scatters it: global day axis x stock
    Y = np.full((len(DAYS), 2, 1), np.nan, dtype=np.float32)
    for row in out.iter_rows(named=True):
        if row["target_1d"] is not None:
            Y[DAYS.index(row["Date"]), "AB".index(row["Code"]), 0] = row["target_1d"]
    ret, source = graph_returns(np.zeros((len(DAYS), 2, 1), np.float32), ["f"], Y, [1], "returns_1d")
    assert source == "target_1d shifted by one day"
    for n, closes in enumerate((CLOSE_A, CLOSE_B)):
        for d in range(len(DAYS)):
            both = d > 0 and closes[d] is not None and closes[d - 1] is not None
            want = closes[d] / closes[d - 1] - 1 if both else np.nan
            np.testing.assert_allclose(ret[d, n], want, rtol=1e-6, equal_nan=True)
    assert np.isnan(ret[5, 1]) and np.isnan(ret[6, 1])  # B's return into and out of its missing day
