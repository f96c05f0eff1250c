"""The compiled rolling windows (``atft.data.rolling``): the numbers and missing cells of a direct
two-pass computation and of polars' window expressions, exact values for constant windows, no look-ahead
even in the last digit, and the same bits whatever the thread count."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from atft.data.rolling import STATS, StockRows, Window, polars_windows, window, window_columns, windows_of

KS = (1, 2, 3, 5, 14, 20, 60)
DIRECT = {
    "sum": lambda w: w.sum(axis=1),
    "mean": lambda w: w.mean(axis=1),
    "std": lambda w: w.std(axis=1, ddof=1) if w.shape[1] > 1 else np.full(len(w), np.nan),
    "sqmean": lambda w: (w * w).mean(axis=1),
    "min": lambda w: w.min(axis=1),
    "max": lambda w: w.max(axis=1),
}


def _panel(seed: int = 0, stocks: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Ragged stocks (1-300 rows) at levels from 1e-2 to 1e8, with missing values, halted runs (a
    repeated price), runs of zeros and sparse zeros: ``(code, x)``."""
    rng = np.random.default_rng(seed)
    code, values = [], []
    for s in range(stocks):
        n = int(rng.integers(1, 300))
        x = 10.0 ** rng.integers(-2, 9) * np.cumprod(1 + 0.02 * rng.standard_normal(n))
        if s % 3 == 0 and n > 40:
            x[10:40] = x[10]
        if s % 5 == 0:
            x[rng.random(n) < 0.05] = np.nan
        if s % 7 == 0 and n > 30:
            x[5:30] = 0.0
        if s % 11 == 0:
            x[rng.random(n) < 0.3] = 0.0
        code += [s] * n
        values.append(x)
    return np.array(code), np.concatenate(values)


def direct(code: np.ndarray, x: np.ndarray, w: Window) -> np.ndarray:
    """The window statistic computed from each window's values (two-pass), NaN where incomplete; a
    window of equal values has a standard deviation of exactly 0."""
    out = np.full(len(x), np.nan)
    rows = StockRows(code)
    for a, n in zip(rows.starts, rows.lengths, strict=True):
        if n < w.k:
            continue
        win = sliding_window_view(x[a:a + n], w.k)                                   # [n-k+1, k]
        value = DIRECT[w.stat](win)
        if w.stat == "std" and w.k > 1:
            value[(win == win[:, -1:]).all(axis=1)] = 0.0
        value[~np.isfinite(win).all(axis=1)] = np.nan
        out[a + w.k - 1:a + n] = value
    return out


def _all_windows(column: str = "x") -> list[Window]:
    return [Window(column, stat, k) for stat in STATS for k in KS]


@pytest.fixture(scope="module")
def panel():
    code, x = _panel()
    windows = _all_windows()
    return code, x, windows, window_columns(StockRows(code), {"x": x}, windows, threads=2)


def test_windows_match_a_direct_two_pass_computation(panel):
    code, x, windows, got = panel
    for w in windows:
        want = direct(code, x, w)
        assert np.array_equal(np.isnan(got[w.name]), np.isnan(want)), w   # the same incomplete windows
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[w.name][ok], want[ok], rtol=1e-11, atol=0, err_msg=str(w))


def test_constant_windows_are_exact(panel):
    code, x, windows, got = panel
    for k in (2, 5, 20):
        want_mean = direct(code, x, Window("x", "mean", k))
        constant = direct(code, x, Window("x", "std", k)) == 0
        assert constant.sum() > 50                                           # halted runs and zero runs
        assert (got[Window("x", "std", k).name][constant] == 0).all()
        np.testing.assert_array_equal(got[Window("x", "mean", k).name][constant], x[constant])
        np.testing.assert_array_equal(got[Window("x", "sum", k).name][constant], k * x[constant])
        zero = constant & (x == 0)
        assert zero.any() and (got[Window("x", "sqmean", k).name][zero] == 0).all()
        assert np.isfinite(want_mean[constant]).all()


def test_a_large_value_leaving_a_window_of_small_ones_keeps_the_digits():
    # a running sum that held 1e12 would keep its rounding (1e-4) once the window holds values near 1
    x = np.concatenate([[1e12], 1 + np.random.default_rng(1).random(100) * 1e-3])
    code = np.zeros(len(x), dtype=np.int64)
    for stat in ("sum", "mean", "std", "sqmean"):
        w = Window("x", stat, 5)
        got = window_columns(StockRows(code), {"x": x}, [w])[w.name]
        want = direct(code, x, w)
        np.testing.assert_allclose(got[5:], want[5:], rtol=1e-11, err_msg=stat)


def test_windows_match_polars_window_expressions():
    code, x = _panel(seed=2)
    x = np.where(np.isfinite(x), np.abs(x) ** 0.1, np.nan)  # levels polars' running sums hold to ~1e-10
    windows = _all_windows()
    got = window_columns(StockRows(code), {"x": x}, windows)
    frame = pl.DataFrame({"Code": code, "x": pl.Series(x, nan_to_null=True)})
    want = frame.select(polars_windows(windows))
    for w in windows:
        ref = want[w.name].to_numpy()
        assert np.array_equal(np.isnan(got[w.name]), np.isnan(ref)), w
        ok = ~np.isnan(ref)
        np.testing.assert_allclose(got[w.name][ok], ref[ok], rtol=1e-9, atol=1e-12, err_msg=str(w))


def test_no_look_ahead_even_in_the_last_digit():
    """Changing a stock's rows after day t, or another stock's rows, leaves every window of the stock up
    to t bit for bit the same."""
    code, x = _panel(seed=4, stocks=12)
    rows = StockRows(code)
    windows = _all_windows()
    before = window_columns(rows, {"x": x}, windows)
    s = int(np.argmax(rows.lengths))
    a, n = rows.starts[s], rows.lengths[s]
    t = a + n // 2
    changed = x.copy()
    changed[t + 1:a + n] *= np.random.default_rng(5).uniform(0.5, 2.0, a + n - t - 1)  # the stock's future
    changed[:a] += 1.0                                                                # the stocks before it
    after = window_columns(rows, {"x": changed}, windows)
    for w in windows:
        np.testing.assert_array_equal(after[w.name][a:t + 1], before[w.name][a:t + 1], err_msg=str(w))
        assert not np.array_equal(after[w.name][t + 1:a + n], before[w.name][t + 1:a + n]) or w.k > n // 2


def test_threads_give_the_same_bits(panel):
    code, x, windows, got = panel
    one = window_columns(StockRows(code), {"x": x}, windows, threads=1)
    for w in windows:
        np.testing.assert_array_equal(one[w.name], got[w.name])


def test_window_names_and_shift():
    w = Window("_lr", "std", 20)
    assert Window.parse(w.name) == w
    assert windows_of([window("_lr", "std", 20) * 2, window("Close", "max", 5) / window("_lr", "std", 20)]) == \
        [w, Window("Close", "max", 5)]
    with pytest.raises(ValueError, match="median"):
        Window("x", "median", 5)
    with pytest.raises(ValueError, match="k >= 1"):
        Window("x", "sum", 0)
    rows = StockRows(np.array(["A", "A", "B", "B", "B"]))
    np.testing.assert_array_equal(rows.shift(np.arange(5.0)), [np.nan, 0, np.nan, 2, 3])
