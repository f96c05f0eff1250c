"""The per-stock features in one compiled pass per stock: the build's engine for ``features.py``.

``features.py`` defines every per-stock feature as a polars expression on rolling windows (the reference,
``compute_features``). Evaluated column by column, those expressions write every helper column, every
window and every intermediate as a full-length array before the features exist; at 5M rows each is 40 MB
of fresh memory, and on a virtual machine first touches of fresh memory cost as much as the arithmetic.
Here, for each stock in turn, the daily helper columns and the windows a set of features needs are
computed into scratch rows the size of one stock's history (reused from stock to stock, so they stay in
cache), and each feature's arithmetic is written straight into its result column: the only full-length
arrays are the results.

The numbers are those of the polars expressions: the windows come from the same kernels as
``rolling.window_columns`` (``rolling.stock_window``: the same bookkeeping, the same bits), and ``SPECS`` restates each feature's arithmetic on top of them in the same order of operations.
``tests/data/test_compiled_features.py`` checks that every feature of ``PER_STOCK_GROUPS`` has a spec
reading the same windows as its expression, and the build-reference tests compare the whole build with
``compute_features``. A NaN here is polars' null: a missing input, an incomplete window, or (``finite``) a
non-finite result.

The kernels are cached by numba next to this module; numba checks only this file's time stamp, so after
editing the window kernels in ``rolling.py`` delete ``src/atft/data/__pycache__`` (a stale cache would keep
the old windows here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from atft.data.rolling import STATS, StockRows, Window, over_stock_groups, stock_window

ANNUAL = math.sqrt(252.0)
LN2 = math.log(2)

# daily helper columns (``features.daily_inputs``), rows of the per-stock scratch
DAILY = ("Open", "High", "Low", "Close", "Volume", "DollarVolume", "_r", "_hi", "_lo", "_co", "_gap",
         "_intraday", "_lv", "_dv", "_lr", "_hl", "_gain", "_loss", "_down", "_illiq", "_gk")
INPUTS = DAILY[:6]  # read from the frame
(OPEN, HIGH, LOW, CLOSE, VOLUME, DOLLAR, R, HI, LO, CO, GAP, INTRA, LV, DV, LR, HL, GAIN, LOSS, DOWN, ILLIQ,
 GK) = range(len(DAILY))
# what each helper column is computed from (``daily_inputs``' stages)
NEEDS = {"_r": ("Close",), "_hi": ("Open", "High", "Close"), "_lo": ("Open", "Low", "Close"),
         "_co": ("Open", "Close"), "_gap": ("Open", "Close"), "_intraday": ("Open", "Close"), "_lv": ("Volume",),
         "_dv": ("DollarVolume",), "_lr": ("_r",), "_hl": ("_hi", "_lo"), "_gain": ("_r",), "_loss": ("_r",),
         "_down": ("_r",), "_illiq": ("_r", "_dv"), "_gk": ("_hl", "_co")}

# the arithmetic on top of the windows w0, w1 (and the row's own helper values); comments: the expression
OPS = ("exp_sum", "exp_diff", "annual", "parkinson", "annual_sqrt", "vol_ratio", "close_gap", "ratio_gap",
       "rsi", "macd", "macd_signal", "macd_hist", "bollinger_pos", "bollinger_width", "stoch", "volume_ratio",
       "zscore", "log", "ratio", "log_eps", "daily", "close_location", "mean")
(EXP_SUM, EXP_DIFF, ANNUAL_OP, PARKINSON, ANNUAL_SQRT, VOL_RATIO, CLOSE_GAP, RATIO_GAP, RSI, MACD, MACD_SIGNAL,
 MACD_HIST, BOLL_POS, BOLL_WIDTH, STOCH, VOLUME_RATIO, ZSCORE, LOG, RATIO, LOG_EPS, DAILY_OP, CLOSE_LOCATION,
 MEAN) = range(len(OPS))
# the daily columns an op reads besides its windows
OP_DAILY = {"close_gap": ("Close",), "macd": ("Close",), "macd_signal": ("Close",), "macd_hist": ("Close",),
            "bollinger_pos": ("Close",), "stoch": ("Close",), "volume_ratio": ("Volume",), "zscore": ("_lv",),
            "close_location": ("Close", "_hi", "_lo")}


@dataclass(frozen=True)
class Spec:
    """One feature: ``op`` on ``windows`` (w0, w1), or on the helper column ``column`` (op ``daily``)."""

    op: str
    windows: tuple[Window, ...] = ()
    column: str = ""


def _w(column: str, stat: str, k: int) -> Window:
    return Window(column, stat, k)


def specs() -> dict[str, Spec]:
    """Every per-stock feature of ``features.PER_STOCK_GROUPS`` (and the MACD signal line), as ops."""
    out: dict[str, Spec] = {}
    for k in (1, 2, 3, 5, 10, 20, 60):
        out[f"returns_{k}d"] = Spec("exp_sum", (_w("_lr", "sum", k),))                 # exp(sum) - 1
    out["momentum_60d_skip5d"] = Spec("exp_diff", (_w("_lr", "sum", 60), _w("_lr", "sum", 5)))
    for k in (5, 10, 20, 60):
        out[f"realized_vol_{k}d"] = Spec("annual", (_w("_lr", "std", k),))              # std * A
    for k in (5, 10, 20, 60):
        out[f"parkinson_vol_{k}d"] = Spec("parkinson", (_w("_hl", "sqmean", k),))
    for k in (5, 10, 20, 60):
        out[f"garman_klass_vol_{k}d"] = Spec("annual_sqrt", (_w("_gk", "mean", k),))    # sqrt(max(m, 0)) * A
    out["vol_ratio_5d_20d"] = Spec("vol_ratio", (_w("_lr", "std", 5), _w("_lr", "std", 20)))
    out["downside_vol_20d"] = Spec("annual_sqrt", (_w("_down", "sqmean", 20),))
    for k in (5, 10, 20, 60):
        out[f"ma_gap_{k}d"] = Spec("close_gap", (_w("Close", "mean", k),))              # Close / w0 - 1
    out["ma_cross_5d_20d"] = Spec("ratio_gap", (_w("Close", "mean", 5), _w("Close", "mean", 20)))
    out["ma_cross_20d_60d"] = Spec("ratio_gap", (_w("Close", "mean", 20), _w("Close", "mean", 60)))
    for k in (5, 14):
        out[f"rsi_{k}d"] = Spec("rsi", (_w("_gain", "mean", k), _w("_loss", "mean", k)))
    out["macd_12_26"] = Spec("macd")
    out["bollinger_pos_20d"] = Spec("bollinger_pos", (_w("Close", "mean", 20), _w("Close", "std", 20)))
    out["bollinger_width_20d"] = Spec("bollinger_width", (_w("Close", "mean", 20), _w("Close", "std", 20)))
    out["stoch_k_14d"] = Spec("stoch", (_w("_lo", "min", 14), _w("_hi", "max", 14)))
    out["macd_signal_9"] = Spec("macd_signal")
    out["macd_hist"] = Spec("macd_hist")
    for k in (5, 20):
        out[f"volume_ratio_{k}d"] = Spec("volume_ratio", (_w("Volume", "mean", k),))
    out["volume_zscore_20d"] = Spec("zscore", (_w("_lv", "mean", 20), _w("_lv", "std", 20)))
    out["log_dollar_volume_20d"] = Spec("log", (_w("_dv", "mean", 20),))
    out["dollar_volume_ratio_5d_20d"] = Spec("ratio", (_w("_dv", "mean", 5), _w("_dv", "mean", 20)))
    for k in (20, 60):
        out[f"amihud_illiq_{k}d"] = Spec("log_eps", (_w("_illiq", "mean", k),))         # log(w0 + 1e-12)
    for k in (20, 60):
        out[f"dist_high_{k}d"] = Spec("close_gap", (_w("_hi", "max", k),))
        out[f"dist_low_{k}d"] = Spec("close_gap", (_w("_lo", "min", k),))
    out["hl_range_1d"] = Spec("daily", column="_hl")
    out["overnight_gap_1d"] = Spec("daily", column="_gap")
    out["intraday_return_1d"] = Spec("daily", column="_intraday")
    out["close_location_1d"] = Spec("close_location")
    out["overnight_gap_mean_5d"] = Spec("mean", (_w("_gap", "mean", 5),))
    out["intraday_return_mean_5d"] = Spec("mean", (_w("_intraday", "mean", 5),))
    return out


SPECS = specs()


def _needed(columns) -> list[str]:
    """``columns`` and every helper column they are computed from, in ``DAILY`` order."""
    todo, seen = list(columns), set()
    while todo:
        c = todo.pop()
        if c not in seen:
            seen.add(c)
            todo += NEEDS.get(c, ())
    return [c for c in DAILY if c in seen]


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _clip(x, c):
    return min(max(x, -c), c)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _daily(cols, a, n, jump, need, d):
    """The stock's helper columns ``d[:, :n]`` (those flagged in ``need``) from its rows ``a .. a+n-1`` of
    ``cols`` (``INPUTS``): ``features.daily_inputs`` with NaN for null (a ``max_horizontal`` skips it)."""
    for j in range(len(INPUTS)):
        if need[j]:
            for p in range(n):
                d[j, p] = cols[j][a + p]
    o, c = d[OPEN], d[CLOSE]
    if need[R]:
        d[R, 0] = np.nan                                     # no previous close
        for p in range(1, n):
            d[R, p] = _clip(c[p] / c[p - 1] - 1, jump)
    if need[HI]:
        for p in range(n):
            oc = max(o[p], c[p])
            d[HI, p] = min(max(d[HIGH, p], oc), oc * (1 + jump))
    if need[LO]:
        for p in range(n):
            oc = min(o[p], c[p])
            d[LO, p] = max(min(d[LOW, p], oc), oc / (1 + jump))
    if need[CO]:
        for p in range(n):
            d[CO, p] = np.log(c[p] / o[p])
    if need[GAP]:
        d[GAP, 0] = np.nan
        for p in range(1, n):
            d[GAP, p] = _clip(o[p] / c[p - 1] - 1, jump)
    if need[INTRA]:
        for p in range(n):
            d[INTRA, p] = _clip(c[p] / o[p] - 1, jump)
    if need[LV]:
        for p in range(n):
            d[LV, p] = _finite(np.log(d[VOLUME, p]))
    if need[DV]:
        for p in range(n):
            d[DV, p] = _finite(d[DOLLAR, p])
    if need[LR]:
        for p in range(n):
            d[LR, p] = np.log1p(d[R, p])
    if need[HL]:
        for p in range(n):
            d[HL, p] = np.log(d[HI, p] / d[LO, p])
    for j in (GAIN, LOSS, DOWN):                             # max_horizontal(r, 0): 0 on the first row
        if need[j]:
            for p in range(n):
                r = d[R, p]
                if np.isnan(r):
                    d[j, p] = 0.0
                elif j == GAIN:
                    d[j, p] = max(r, 0.0)
                elif j == LOSS:
                    d[j, p] = max(-r, 0.0)
                else:
                    d[j, p] = min(np.log1p(r), 0.0)
    if need[ILLIQ]:
        for p in range(n):
            d[ILLIQ, p] = _finite(abs(d[R, p]) / d[DV, p])
    if need[GK]:
        k = 2 * LN2 - 1
        for p in range(n):
            d[GK, p] = 0.5 * d[HL, p] ** 2 - k * d[CO, p] ** 2


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _finite(x):
    return x if np.isfinite(x) else np.nan


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _ewm(x, n, span, min_samples, out):
    """polars' ``ewm_mean(span, adjust=False, min_samples)`` of ``x[:n]`` (its update, bit for bit): starts
    at the first value, a missing value stays missing."""
    alpha = 2.0 / (span + 1.0)
    avg = np.nan
    count = 0
    for p in range(n):
        v = x[p]
        if np.isnan(v):
            out[p] = np.nan
            continue
        count += 1
        if np.isnan(avg):
            avg = v
        else:
            avg = avg + alpha * (v - avg)
        out[p] = avg if count >= min_samples else np.nan


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _macd(close, n, line, signal, scratch):
    """``line`` = (EMA12 - EMA26) / Close (from row 25 on), ``signal`` = its 9-row EMA."""
    _ewm(close, n, 12.0, 26, line)
    _ewm(close, n, 26.0, 26, scratch)
    for p in range(n):
        line[p] = _finite((line[p] - scratch[p]) / close[p])
    _ewm(line, n, 9.0, 9, signal)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _feature(op, w0, w1, d, column, line, signal, n, out):
    """One feature's ``out[:n]`` (``OPS``; ``w0``/``w1`` its windows, ``column`` the daily row of op
    ``daily``); each branch is the polars expression of ``features.py`` in its order of operations."""
    c = d[CLOSE]
    for p in range(n):
        a, b = w0[p], w1[p]
        if op == EXP_SUM:
            v = np.exp(a) - 1
        elif op == EXP_DIFF:
            v = np.exp(a - b) - 1
        elif op == ANNUAL_OP:
            v = a * ANNUAL
        elif op == PARKINSON:
            v = np.sqrt(max(a, 0.0) * (1 / (4 * LN2))) * ANNUAL if not np.isnan(a) else np.nan
        elif op == ANNUAL_SQRT:
            v = np.sqrt(max(a, 0.0)) * ANNUAL if not np.isnan(a) else np.nan
        elif op == VOL_RATIO:
            v = (a * ANNUAL) / (b * ANNUAL)
        elif op == CLOSE_GAP:
            v = c[p] / a - 1
        elif op == RATIO_GAP:
            v = a / b - 1
        elif op == RSI:                                    # no move at all: neutral (50)
            v = 100 / (1 + b / a) if a + b > 0 else (50.0 if not np.isnan(a) else np.nan)
        elif op == MACD:
            v = line[p]
        elif op == MACD_SIGNAL:
            v = signal[p]
        elif op == MACD_HIST:
            v = line[p] - signal[p]
        elif op == BOLL_POS:
            v = (c[p] - a) / (2 * b)
        elif op == BOLL_WIDTH:
            v = 4 * b / a
        elif op == STOCH:
            v = (c[p] - a) / (b - a)
        elif op == VOLUME_RATIO:
            v = d[VOLUME, p] / a
        elif op == ZSCORE:
            v = (d[LV, p] - a) / b
        elif op == LOG:
            v = np.log(a)
        elif op == RATIO:
            v = a / b
        elif op == LOG_EPS:
            v = np.log(a + 1e-12)
        elif op == DAILY_OP:
            v = d[column, p]
        elif op == CLOSE_LOCATION:
            span = d[HI, p] - d[LO, p]
            v = (c[p] - d[LO, p]) / span if span > 0 else 0.5
        else:                                              # MEAN
            v = a
        out[p] = _finite(v)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _stocks(cols, starts, lengths, jump, need, win_col, win_stat, win_k, ops, arg0, arg1, column, macd, out):
    """The features ``ops`` of the stocks ``starts`` / ``lengths`` into their rows of ``out[F, rows]``."""
    m = lengths.max() if len(lengths) else 0
    d = np.empty((len(DAILY), m))                          # helper columns of one stock
    w = np.empty((len(win_col) + 1, m))                    # its windows; the last row: an all-NaN stand-in
    w[-1] = np.nan
    scratch, line, signal = np.empty(m), np.empty(m), np.empty(m)
    for s in range(len(starts)):
        a, n = starts[s], lengths[s]
        _daily(cols, a, n, jump, need, d)
        for j in range(len(win_col)):
            stock_window(d[win_col[j]], 0, n, win_k[j], win_stat[j], w[j], scratch)
        if macd:
            _macd(d[CLOSE], n, line, signal, scratch)
        for f in range(len(ops)):
            _feature(ops[f], w[arg0[f]], w[arg1[f]], d, column[f], line, signal, n, out[f, a:a + n])


def _read_only(x: np.ndarray) -> np.ndarray:
    """``x`` as a contiguous float64 array flagged read-only, without a copy where it already is one: the
    kernel's inputs share one compiled type whether polars lent them (read-only) or they were copied."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.flags.writeable:
        x = x.view()
        x.flags.writeable = False
    return x


def stock_feature_arrays(columns: dict[str, np.ndarray], rows: StockRows, names: list[str], jump_clip: float,
                         threads: int | None = None) -> np.ndarray:
    """``[len(names), rows]`` float64 values of the named per-stock features (NaN = null).

    Args:
        columns: ``INPUTS`` as ``[rows]`` arrays (any float dtype; NaN = missing), rows sorted by
            ``Code, Date``. rows: their stock layout. names: features of ``SPECS``.
        jump_clip: one-day moves are clipped at +-this. threads: as ``rolling.window_columns``.
    """
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        raise ValueError(f"no compiled spec for feature(s) {unknown}")
    chosen = [SPECS[n] for n in names]
    windows = list(dict.fromkeys(w for s in chosen for w in s.windows))
    daily = _needed([w.column for w in windows] + [s.column for s in chosen if s.column]
                    + [c for s in chosen for c in OP_DAILY.get(s.op, ())])
    need = np.array([c in daily for c in DAILY])
    cols = tuple(_read_only(columns[c] if need[j] else np.empty(0)) for j, c in enumerate(INPUTS))
    slot = {w: j for j, w in enumerate(windows)}
    stand_in = len(windows)
    arg = [[slot[s.windows[i]] if len(s.windows) > i else stand_in for s in chosen] for i in (0, 1)]
    ops = np.array([OPS.index(s.op) for s in chosen], dtype=np.int64)
    column = np.array([DAILY.index(s.column) if s.column else 0 for s in chosen], dtype=np.int64)
    wins = (np.array([DAILY.index(w.column) for w in windows], dtype=np.int64),
            np.array([STATS.index(w.stat) for w in windows], dtype=np.int64),
            np.array([w.k for w in windows], dtype=np.int64))
    macd = any(s.op.startswith("macd") for s in chosen)
    out = np.empty((len(names), rows.n))
    args = [np.array(a, dtype=np.int64) for a in arg]

    def run(task: slice) -> None:
        _stocks(cols, rows.starts[task], rows.lengths[task], float(jump_clip), need, *wins, ops, *args, column,
                macd, out)

    over_stock_groups(rows, run, threads)
    return out
