"""The per-stock features in one compiled pass per stock: the build's engine for ``features.py``.

``features.py`` defines every per-stock feature as a polars expression on rolling windows (the reference,
``compute_features``). Evaluated column by column, those expressions write every helper column, every
window and every intermediate as a full-length array before the features exist; at 5M rows each is 40 MB
of fresh memory, and on a virtual machine first touches of fresh memory cost as much as the arithmetic.
Here, for each stock in turn, the daily helper columns and the windows a set of features needs are
computed into scratch rows the size of one stock's history (reused from stock to stock, so they stay in
cache), and each feature's arithmetic is written straight into its result column: the only full-length
arrays are the results.

The numbers are those of the polars expressions: the windows come from the same kernel as
``rolling.window_columns`` (``kernels.stock_window``: the same bookkeeping, the same bits), and ``SPECS``
restates each feature's arithmetic on top of them in the same order of operations (the compiled ops are in
``kernels``). ``tests/data/test_compiled_features.py`` checks that every feature of ``PER_STOCK_GROUPS``
has a spec reading the same windows as its expression and gives the expression's numbers bit for bit, and
the build-reference tests compare the whole build with ``compute_features``. A NaN here is polars' null: a
missing input, an incomplete window, or (``finite``) a non-finite result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atft.data.kernels import DAILY, INPUTS, OPS, STATS, stock_features_kernel
from atft.data.rolling import StockRows, Window, over_stock_groups

# what each helper column is computed from (``daily_inputs``' stages)
NEEDS = {"_r": ("Close",), "_hi": ("Open", "High", "Close"), "_lo": ("Open", "Low", "Close"),
         "_co": ("Open", "Close"), "_gap": ("Open", "Close"), "_intraday": ("Open", "Close"), "_lv": ("Volume",),
         "_dv": ("DollarVolume",), "_lr": ("_r",), "_hl": ("_hi", "_lo"), "_gain": ("_r",), "_loss": ("_r",),
         "_down": ("_r",), "_illiq": ("_r", "_dv"), "_gk": ("_hl", "_co")}

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


_w = Window  # a short name for the table below


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
    slot = {w: j for j, w in enumerate(windows)}    # the kernel's window rows; row len(windows) is all NaN
    w0, w1 = (np.array([slot[s.windows[i]] if len(s.windows) > i else len(windows) for s in chosen], dtype=np.int64)
              for i in (0, 1))
    ops = np.array([OPS.index(s.op) for s in chosen], dtype=np.int64)
    column = np.array([DAILY.index(s.column) if s.column else 0 for s in chosen], dtype=np.int64)
    wins = (np.array([DAILY.index(w.column) for w in windows], dtype=np.int64),
            np.array([STATS.index(w.stat) for w in windows], dtype=np.int64),
            np.array([w.k for w in windows], dtype=np.int64))
    macd = any(s.op.startswith("macd") for s in chosen)
    out = np.empty((len(names), rows.n))                                         # [F, rows]

    def run(task: slice) -> None:
        stock_features_kernel(cols, rows.starts[task], rows.lengths[task], float(jump_clip), need, *wins, ops, w0, w1,
                              column, macd, out)

    over_stock_groups(rows, run, threads)
    return out
