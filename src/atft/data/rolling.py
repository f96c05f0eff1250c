"""Rolling windows over each stock's own rows, compiled: the window columns the features are made of.

Rows are sorted by ``Code, Date``, so each stock's rows are contiguous. The window of ``k`` rows ending
at row ``i`` holds the stock's rows ``i-k+1 .. i``; it is **complete** when all ``k`` rows belong to the
stock and hold a finite value, and only complete windows have a value (NaN otherwise, null once stored):
the numbers and the missing cells of polars' ``rolling_<stat>(k, min_samples=k).over("Code")``, which
``polars_windows`` spells out and the build-reference tests compare against. One difference by
design: a NaN inside a window makes the window missing here, where polars would return NaN; the build
validates prices and turns non-finite helper values into null first, so the two never meet there.

How: one compiled pass per window over each stock's rows (``kernels.window_kernel``: running sums, van
Herk / Gil-Werman extremes, exact constant windows, no look-ahead even in the last digit), in threads over
groups of stocks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

from atft.data.kernels import STATS, window_kernel
from atft.training.cpu_share import available_cpus

PREFIX = "_w:"
STOCKS_PER_TASK = 64  # stocks one thread computes at a time


@dataclass(frozen=True)
class Window:
    """``stat`` of column ``column`` over the stock's last ``k`` rows (``sqmean``: mean of squares)."""

    column: str
    stat: str
    k: int

    def __post_init__(self):
        if self.stat not in STATS or self.k < 1:
            raise ValueError(f"window {self.stat!r} of {self.k} rows: expected a stat in {STATS} and k >= 1")

    @property
    def name(self) -> str:
        """The helper column that holds the window's values."""
        return f"{PREFIX}{self.stat}:{self.k}:{self.column}"

    @classmethod
    def parse(cls, name: str) -> Window:
        stat, k, column = name[len(PREFIX):].split(":", 2)
        return cls(column, stat, int(k))


def window(column: str, stat: str, k: int) -> pl.Expr:
    """The window's helper column, to use in feature expressions (filled by ``polars_windows`` or
    ``window_columns``)."""
    return pl.col(Window(column, stat, k).name)


def windows_of(exprs) -> list[Window]:
    """The windows the expressions read, in first-use order."""
    names = dict.fromkeys(n for e in exprs for n in e.meta.root_names() if n.startswith(PREFIX))
    return [Window.parse(n) for n in names]


def polars_windows(windows: list[Window]) -> list[pl.Expr]:
    """The windows as polars window expressions over ``Code``: the definition the compiled kernels match."""
    exprs = []
    for w in windows:
        col = pl.col(w.column).pow(2) if w.stat == "sqmean" else pl.col(w.column)
        stat = "mean" if w.stat == "sqmean" else w.stat
        exprs.append(getattr(col, f"rolling_{stat}")(w.k, min_samples=w.k).over("Code").alias(w.name))
    return exprs


class StockRows:
    """Where each stock's rows lie in a frame sorted by ``Code, Date``.

    Args:
        code: ``[rows]`` stock key of each row (any dtype), equal keys contiguous.
    """

    def __init__(self, code: np.ndarray):
        n = len(code)
        new = np.ones(n, dtype=bool)
        new[1:] = code[1:] != code[:-1]
        self.starts = np.flatnonzero(new)                                          # [S]
        self.lengths = np.diff(np.append(self.starts, n))                          # [S]
        self.n = n

    def shift(self, x: np.ndarray) -> np.ndarray:
        """The stock's previous row's value (NaN on its first row): ``shift(1).over("Code")``."""
        out = np.empty(self.n)
        out[1:] = x[:-1]
        out[self.starts] = np.nan
        return out


def window_columns(rows: StockRows, columns: Mapping[str, np.ndarray], windows: list[Window],
                   threads: int | None = None) -> dict[str, np.ndarray]:
    """The windows' values, ``{window name: [rows] float64}`` (NaN where the window is incomplete).

    Args:
        rows: the frame's stock layout. columns: ``{column: [rows] float64}`` (NaN/inf = missing).
        windows: what to compute.
        threads: groups of stocks computed at once (default: the CPUs this process may use, affinity and
            cgroup quota as for training (``cpu_share.available_cpus``), at most 4); the kernels release
            the GIL, and groups write disjoint rows.
    """
    columns = {w.column: np.ascontiguousarray(columns[w.column], dtype=np.float64) for w in windows}
    out = {w.name: np.empty(rows.n) for w in windows}

    def run(task: slice) -> None:
        for w in windows:
            window_kernel(columns[w.column], rows.starts[task], rows.lengths[task], w.k, STATS.index(w.stat),
                           out[w.name])

    over_stock_groups(rows, run, threads)
    return out


def over_stock_groups(rows: StockRows, run: Callable[[slice], None], threads: int | None = None) -> None:
    """``run(task)`` for each group of ``STOCKS_PER_TASK`` stocks (``task``: a slice of ``rows.starts``), on
    ``threads`` threads (default: the CPUs this process may use, ``cpu_share.available_cpus``, at most 4);
    ``run`` must release the GIL (a compiled kernel) and write only its stocks' rows."""
    tasks = [slice(a, a + STOCKS_PER_TASK) for a in range(0, len(rows.starts), STOCKS_PER_TASK)]
    threads = threads or min(4, available_cpus().threads)
    if threads <= 1 or len(tasks) <= 1:
        for task in tasks:
            run(task)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, tasks))
