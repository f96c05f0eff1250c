"""Rolling windows over each stock's own rows, compiled: the window columns the features are made of.

Rows are sorted by ``Code, Date``, so each stock's rows are contiguous. The window of ``k`` rows ending
at row ``i`` holds the stock's rows ``i-k+1 .. i``; it is **complete** when all ``k`` rows belong to the
stock and hold a finite value, and only complete windows have a value (NaN otherwise, null once stored):
the numbers and the missing cells of polars' ``rolling_<stat>(k, min_samples=k).over("Code")``, which
``polars_windows`` spells out and the build-reference tests compare against. One difference by
design: a NaN inside a window makes the window missing here, where polars would return NaN; the build
validates prices and turns non-finite helper values into null first, so the two never meet there.

How: one compiled pass (numba) per window over each stock's rows, sliding the window's sums (for a
standard deviation, of deviations from a reference moved to the window's mean every ``k`` rows and
their squares) and, for minima and maxima, van Herk / Gil-Werman's block prefix and suffix extremes; in
threads over groups of stocks. No look-ahead, not even in the last digit: the value at a
stock's day ``t`` is computed from its days ``<= t`` only, by a sequence of operations that depends on
the position of ``t`` in the stock's history and nothing later; the leakage tests compare builds bit
for bit.

Precision and exactness: a running value is recomputed from the window's values whenever the window
becomes complete again after a missing value and whenever the terms added and removed since the last
recompute exceed it ``LOST_DIGITS`` times (a large value leaving a window of small ones; for a standard
deviation, a variance that small beside the sums of squares), so at least ~12 significant digits survive.
A window whose values are all equal (a halted stock, a run of zeros) gets exactly its value as mean, a
sum of exactly ``k`` times it and a standard deviation of exactly 0, as polars and pandas give; so a
window without a single gain has a mean gain of exactly 0 and ties stay ties in a per-date rank.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
import polars as pl

from atft.training.cpu_share import available_cpus

PREFIX = "_w:"
STATS = ("sum", "mean", "std", "sqmean", "min", "max")
STOCKS_PER_TASK = 64  # stocks one thread computes at a time
# a running value is recomputed from the window when the terms it was updated with since the last
# recompute exceed it this many times (fewer than ~12 of float64's 16 digits would be left)
LOST_DIGITS = 1e4


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


SUM, MEAN, STD, SQMEAN, MIN, MAX = range(6)  # kernel codes of STATS, in order


@numba.njit(nogil=True, cache=True)
def _total(x, lo, hi, squares):
    """Sum of ``x[lo:hi]`` (of its squares)."""
    total = 0.0
    for q in range(lo, hi):
        total += x[q] * x[q] if squares else x[q]
    return total


@numba.njit(nogil=True, cache=True)
def _sums(x, a, n, k, stat, out):
    """``out[i]`` = sum / mean / mean of squares of the window of ``k`` rows ending at each row ``i`` of
    the stock at rows ``a .. a+n-1`` (NaN while incomplete), by a running sum."""
    squares, is_sum = stat == SQMEAN, stat == SUM
    inv_k = 1.0 / k      # products, not divisions, in the loop
    # two run lengths, counted without branches and without reading the row that leaves the window (a
    # zero-heavy column such as gains made branches mispredict); written out again in _stds, not shared:
    # with the earlier counters, a shared jitted helper made both kernels ~40% slower
    clean = 0            # finite rows ending at this one: the window is complete when >= k
    run = 0              # rows ending at this one equal to it: all of the window's values are equal when >= k
    prev = np.nan
    fresh = True         # the running sum is recomputed from the window
    total = rounding = 0.0  # rounding: the |terms| added since, what the running sum's error scales with
    for p in range(n):
        i = a + p
        new = x[i]
        clean = (clean + 1) * np.int64(np.isfinite(new))
        run = run * np.int64(new == prev) + 1
        prev = new
        if clean < k:
            out[i] = np.nan
            fresh = True
            continue
        if not fresh:                                # slide: one value in, one out
            old = x[i - k]
            if squares:
                total += new * new - old * old
                rounding += new * new + old * old
            else:
                total += new - old
                rounding += abs(new) + abs(old)
            fresh = rounding > LOST_DIGITS * abs(total)
        if fresh:                                    # after a gap, and when digits were lost
            total = _total(x, i - k + 1, i + 1, squares)
            rounding = 0.0
            fresh = False
        # run >= k: every value of the window equals x[i] (a select, not a branch)
        const = k * new if is_sum else (new * new if squares else new)
        value = total if is_sum else (max(total * inv_k, 0.0) if squares else total * inv_k)
        out[i] = const if run >= k else value


@numba.njit(nogil=True, cache=True)
def _stds(x, a, n, k, out):
    """``out[i]`` = sample standard deviation of the window of ``k`` rows ending at each row ``i`` of the
    stock at rows ``a .. a+n-1`` (NaN while incomplete), from running sums of the deviations ``d`` from a
    reference (the window's mean when last recomputed, at most ``k`` rows ago) and of their squares."""
    clean = run = 0      # as in _sums
    prev = np.nan
    fresh = True
    ref = s1 = s2 = rounding = 0.0
    until = 0            # rows until the next recompute, which moves the reference to the window's mean
    inv_k, inv_k1 = 1.0 / k, 1.0 / max(k - 1, 1)      # products, not divisions, in the loop
    for p in range(n):
        i = a + p
        new = x[i]
        clean = (clean + 1) * np.int64(np.isfinite(new))
        run = run * np.int64(new == prev) + 1
        prev = new
        if clean < k or k == 1:
            out[i] = np.nan
            fresh = True
            continue
        until -= 1
        if not fresh and until > 0:                  # slide: one value in, one out
            dn, do = new - ref, x[i - k] - ref
            s1 += dn - do
            s2 += dn * dn - do * do
            rounding += dn * dn + do * do
        else:
            fresh = True
        var = s2 - s1 * s1 * inv_k
        if fresh or rounding + s2 > LOST_DIGITS * var:  # every k rows, after a gap, when digits were lost
            ref = _total(x, i - k + 1, i + 1, False) / k
            s1 = s2 = 0.0
            for q in range(i - k + 1, i + 1):
                s1 += x[q] - ref
                s2 += (x[q] - ref) * (x[q] - ref)
            var = s2 - s1 * s1 * inv_k
            rounding = 0.0
            fresh = False
            until = k
        out[i] = 0.0 if run >= k else np.sqrt(max(var, 0.0) * inv_k1)


@numba.njit(nogil=True, cache=True)
def _extremes(x, a, n, k, stat, out, scratch):
    """``out[i]`` = min / max of the window of ``k`` rows ending at each row ``i`` of the stock at rows
    ``a .. a+n-1`` (NaN while incomplete), by van Herk / Gil-Werman: with the stock's rows cut into
    blocks of ``k`` from its first row, a window is the tail of one block and the head of the next, so
    its extreme is that of a suffix extreme (``scratch``) and a prefix extreme, three branch-free passes."""
    sign = 1.0 if stat == MAX else -1.0              # a minimum is the maximum of -x
    for start in range(0, n, k):                     # suffix maxima within each block
        end = min(start + k, n)
        best = -np.inf
        for p in range(end - 1, start - 1, -1):
            v = sign * x[a + p] if np.isfinite(x[a + p]) else -np.inf
            best = v if v > best else best
            scratch[p] = best
    clean = 0
    best = -np.inf
    into = 0                                         # rows of the current block before row p
    for p in range(n):
        i = a + p
        clean = (clean + 1) * np.int64(np.isfinite(x[i]))
        v = sign * x[i] if np.isfinite(x[i]) else -np.inf
        best = v if (into == 0 or v > best) else best  # prefix maximum within the block
        into = into + 1 if into + 1 < k else 0
        if clean >= k:
            tail = scratch[p - k + 1]                # rows p-k+1 .. the end of their block (<= p)
            out[i] = sign * (tail if tail > best else best)
        else:
            out[i] = np.nan


@numba.njit(nogil=True, cache=True)
def stock_window(x, a, n, k, stat, out, scratch):
    """One window statistic (``STATS`` code) of the stock at rows ``a .. a+n-1`` of ``x`` into the same rows
    of ``out``; ``scratch``: at least ``n`` floats."""
    if stat == MIN or stat == MAX:
        _extremes(x, a, n, k, stat, out, scratch)
    elif stat == STD:
        _stds(x, a, n, k, out)
    else:
        _sums(x, a, n, k, stat, out)


@numba.njit(nogil=True, cache=True)
def _window_kernel(x, starts, lengths, k, stat, out):
    """One window statistic for the stocks ``starts`` / ``lengths`` (rows of ``x`` and ``out``)."""
    scratch = np.empty(lengths.max() if len(lengths) else 0)
    for s in range(len(starts)):
        stock_window(x, starts[s], lengths[s], k, stat, out, scratch)


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
            _window_kernel(columns[w.column], rows.starts[task], rows.lengths[task], w.k, STATS.index(w.stat),
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
