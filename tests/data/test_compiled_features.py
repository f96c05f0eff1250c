"""The compiled per-stock features (``atft.data.compiled_features``) restate ``features.py``'s polars
expressions: every feature has a spec reading the same windows, and on a panel full of edge cases (halted
stocks, zero and missing volumes, stocks shorter than the windows, one-row stocks) each feature equals, bit
for bit and missing cell for missing cell, its polars expression evaluated on the same compiled windows."""

from __future__ import annotations

import tracemalloc

import numpy as np
import polars as pl
import pytest

from atft.data.compiled_features import INPUTS, SPECS, stock_feature_arrays
from atft.data.cross_section import finite
from atft.data.features import PER_STOCK_GROUPS, macd_signal_features, with_daily_inputs
from atft.data.pipeline import group_features, stock_index, stock_inputs
from atft.data.rolling import StockRows, window_columns, windows_of

CLIP = 0.4
NAMES = [n for g in PER_STOCK_GROUPS for n in group_features(g)]


def _panel(seed: int = 0) -> pl.DataFrame:
    """``Code, Date`` + ``INPUTS`` sorted by ``Code, Date``: 24 stocks of 1-260 rows with the cases that
    change a missing cell or an exact value."""
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(24):
        n = [1, 3, 13, 27, 70][s] if s < 5 else int(rng.integers(60, 260))
        close = 10.0 ** rng.integers(0, 4) * np.cumprod(1 + 0.03 * rng.standard_normal(n))
        if s % 4 == 1 and n > 50:
            close[20:50] = close[20]                                  # halted: constant windows
        if s == 6:
            close[40] = close[39] * 3                                 # a jump beyond the clip
        open_ = close * (1 + 0.01 * rng.standard_normal(n))
        high = np.maximum(open_, close) * (1 + 0.02 * rng.random(n))
        low = np.minimum(open_, close) * (1 - 0.02 * rng.random(n))
        if s % 4 == 1 and n > 50:
            open_[20:50] = high[20:50] = low[20:50] = close[20]      # no range: high = low
        if s == 7:
            high[30] = close[30] * 5                                  # a bad tick, capped
        volume = rng.integers(0, 3, n) * 1e5 if s % 5 == 2 else rng.lognormal(12, 1, n)  # zeros: log = -inf
        volume[rng.random(n) < 0.05] = np.nan                         # missing volume
        parts.append(pl.DataFrame({"Code": f"S{s:02d}", "Date": np.arange(n), "Open": open_, "High": high,
                                   "Low": low, "Close": close, "Volume": volume}))
    frame = pl.concat(parts).with_columns(pl.col("Volume").fill_nan(None))
    return frame.with_columns((pl.col("Close") * pl.col("Volume")).alias("DollarVolume"))


def _polars_on_compiled_windows(frame: pl.DataFrame) -> pl.DataFrame:
    """Every per-stock feature as ``features.py``'s expression, on windows from ``rolling.window_columns``."""
    code = stock_index(frame)
    rows = StockRows(code)
    prev = pl.Series("_prev", rows.shift(frame["Close"].to_numpy()), nan_to_null=True)
    base = with_daily_inputs(frame.with_columns(pl.Series("Code", code).set_sorted(), prev), CLIP)
    exprs = {n: e for make in PER_STOCK_GROUPS.values() for n, e in make().items()}
    windows = windows_of(exprs.values())
    inputs = base.select(pl.col(c).cast(pl.Float64).fill_null(np.nan) for c in dict.fromkeys(w.column for w in windows))
    values = window_columns(rows, {c: inputs[c].to_numpy() for c in inputs.columns}, windows)
    base = base.with_columns(pl.Series(n, v, nan_to_null=True) for n, v in values.items())
    out = base.with_columns(finite(e).alias(n) for n, e in exprs.items())
    signal = macd_signal_features()
    out = out.with_columns(finite(e).alias(n) for n, e in signal.items())
    return out.select(NAMES)


def _compiled(frame: pl.DataFrame, names=NAMES, threads=None) -> np.ndarray:
    return stock_feature_arrays(stock_inputs(frame), StockRows(stock_index(frame)), names, CLIP, threads)


def test_every_feature_has_a_spec_reading_its_expressions_windows():
    exprs = {n: e for make in PER_STOCK_GROUPS.values() for n, e in make().items()}
    assert set(SPECS) == set(exprs) | set(macd_signal_features())
    for name, expr in exprs.items():
        assert set(SPECS[name].windows) == set(windows_of([expr])), name


@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_features_equal_polars_expressions_bit_for_bit(seed):
    frame = _panel(seed)
    want = _polars_on_compiled_windows(frame)
    got = _compiled(frame)
    for j, name in enumerate(NAMES):
        w = want[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
        assert np.array_equal(np.isnan(got[j]), np.isnan(w)), f"{name}: missing cells differ"
        assert np.array_equal(got[j], w, equal_nan=True), f"{name}: values differ"
        assert not np.isinf(got[j]).any(), name


def test_cases_the_panel_must_cover():
    # the comparison above means something only if these cases occur in it
    frame = _panel(0)
    got = dict(zip(NAMES, _compiled(frame), strict=True))
    assert np.isnan(got["volume_zscore_20d"]).sum() > np.isnan(got["returns_20d"]).sum()  # zero/missing volume
    assert (got["realized_vol_20d"] == 0).any()                      # a halted stock's constant window
    assert (got["rsi_14d"] == 50).any() and (got["close_location_1d"] == 0.5).any()
    assert np.isnan(got["stoch_k_14d"][~np.isnan(got["rsi_14d"])]).any()  # high = low over 14 days: 0/0
    assert np.isfinite(got["macd_signal_9"]).any()


def test_subsets_and_thread_counts_give_the_same_bits():
    frame = _panel(2)
    full = _compiled(frame, threads=1)
    some = ["dist_low_60d", "returns_5d", "macd_hist", "amihud_illiq_20d"]
    part = _compiled(frame, some, threads=2)
    for j, name in enumerate(some):
        assert np.array_equal(part[j], full[NAMES.index(name)], equal_nan=True), name


def test_future_rows_do_not_move_past_values():
    frame = _panel(3)
    before = _compiled(frame)
    cut = 120
    day = frame["Date"].to_numpy()
    changed = frame.with_columns(*[pl.when(pl.col("Date") >= cut).then(pl.col(c) * 1.7).otherwise(pl.col(c)).alias(c)
                                   for c in INPUTS])
    after = _compiled(changed)
    past = day < cut
    assert np.array_equal(before[:, past], after[:, past], equal_nan=True)
    assert not np.array_equal(before[:, ~past], after[:, ~past], equal_nan=True)


def test_no_full_length_intermediates():
    # the point of the compiled pass: the result block is the only full-length allocation (numpy's, as
    # tracemalloc sees them; ~300 KB of small ones besides); one window column per window, as the arithmetic
    # on window columns had (11 for the ten features of bench_build), fails
    frame = pl.concat([_panel(0).with_columns(pl.col("Code") + f"_{i}") for i in range(20)]).sort("Code", "Date")
    inputs, rows = stock_inputs(frame), StockRows(stock_index(frame))
    for names in (NAMES, NAMES[:10]):
        stock_feature_arrays(inputs, rows, names, CLIP)                   # compiled / loaded outside the count
        tracemalloc.start()
        try:
            out = stock_feature_arrays(inputs, rows, names, CLIP)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert out.nbytes == len(names) * rows.n * 8
        assert peak < out.nbytes + 2 * rows.n * 8, (len(names), peak / (rows.n * 8))


def test_unknown_feature_is_named():
    with pytest.raises(ValueError, match="no_such_feature"):
        _compiled(_panel(0), ["returns_5d", "no_such_feature"])
