"""Per-date stock graphs: top-k |return correlation| neighbours over the trailing window, with
``edge_attr = [corr, same_sector, same_market]``.

Only returns of days ``d-W+1 .. d`` enter the graph of day ``d`` (no look-ahead), and only stocks valid
on day ``d`` get edges.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numba
import numpy as np
import torch

from atft.errors import InputError

EDGE_DIM = 3  # corr, same_sector, same_market
RESIDUALS = ("none", "market", "sector")  # ``model.graph.residual``
TOPK_ROWS = 256  # stocks per block of the correlation matrix in ``top_partners``


def _as_numpy(a, dtype) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def unit_columns(window: np.ndarray, min_periods: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The columns of ``window [W, n]`` (NaN = missing) demeaned over their own observed days, missing
    entries set to 0, scaled to unit norm: ``z.T @ z`` is ``window_correlation``'s matrix.

    A column with fewer than ``min_periods`` observations or zero variance is all zeros and not ``ok``.

    Shapes: ``[W, n] -> (z [W, n] float32, ok [n] bool)``.
    """
    window = np.asarray(window, dtype=np.float64)
    z, ok = _unit_columns(window, 0, window.shape[0], np.arange(window.shape[1]), int(min_periods))
    return torch.from_numpy(z), torch.from_numpy(ok)


@numba.njit(nogil=True, cache=True)
def _unit_columns(returns, lo, hi, stocks, min_periods):  # pragma: no cover - compiled
    """``unit_columns`` of ``returns[lo:hi, stocks]`` without forming that window: one pass for each
    column's count and mean, one for its squared deviations, one writing ``z`` (float64 sums, float32
    out). Rows outer, stocks inner, so each pass reads the panel's rows in order."""
    n = len(stocks)
    count = np.zeros(n, np.int64)
    total = np.zeros(n)
    for t in range(lo, hi):
        for i in range(n):
            v = returns[t, stocks[i]]
            if np.isfinite(v):
                count[i] += 1
                total[i] += v
    mean = total / np.maximum(count, 1)
    ss = np.zeros(n)
    for t in range(lo, hi):
        for i in range(n):
            v = returns[t, stocks[i]]
            if np.isfinite(v):
                ss[i] += (v - mean[i]) ** 2
    ok = (count >= min_periods) & (ss > 1e-20)
    scale = np.where(ok, 1.0 / np.sqrt(np.maximum(ss, 1e-20)), 0.0)
    z = np.zeros((hi - lo, n), np.float32)
    for t in range(lo, hi):
        for i in range(n):
            v = returns[t, stocks[i]]
            if np.isfinite(v):
                z[t - lo, i] = (v - mean[i]) * scale[i]
    return z, ok


def window_correlation(window: np.ndarray, min_periods: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlation matrix of the columns of ``window [W, n]`` (NaN = missing), one matrix product.

    Each column is demeaned over its own observed days, missing entries are then set to 0, and
    corr_ij = sum_t z_ti z_tj / sqrt(sum_t z_ti^2 sum_t z_tj^2). This equals Pearson's correlation when
    both stocks are fully observed; with gaps it shrinks toward 0 (missing days contribute nothing to
    the co-moment but the norms use every observed day), the conservative direction for a kNN graph.
    A column with fewer than ``min_periods`` observations or zero variance has no correlations.

    Shapes: ``[W, n] -> (corr [n, n] float32, ok [n] bool)``.
    """
    z, ok = unit_columns(window, min_periods)
    return z.T @ z, ok  # [n, n], [n]


def top_partners(z: torch.Tensor, ok: torch.Tensor, k: int,
                 rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each stock's ``k`` largest-|corr| partners (itself and not-``ok`` stocks excluded) and their corr.

    The ``[n, n]`` correlation matrix of ``window_correlation`` is never formed, and each of its symmetric
    halves is computed once: ``rows`` (default ``TOPK_ROWS``) stocks ``s..e-1`` at a time, the block
    ``[rows, n - s]`` of their correlations with stocks ``s..n-1`` (one matrix product; the same values as
    the whole product's) updates the running top ``k`` of its rows and, read by columns, of stocks
    ``e..n-1`` (``_top_abs``). Every stock meets its candidates in increasing order, so among equal
    ``|corr|`` the lower-numbered stock is preferred. A stock that is not ``ok`` picks nobody.

    Shapes: ``z [W, n]``, ``ok [n]`` -> ``(partner [n, k] int64, corr [n, k] float32)``, corr NaN where
    there is no candidate (partner then meaningless).
    """
    n, rows = z.shape[1], rows or TOPK_ROWS
    zt = z.T.contiguous()  # [n, W]
    partner = np.zeros((n, k), np.int64)
    corr = np.full((n, k), np.nan, np.float32)  # signed corr of the running top k
    best = np.full((n, k), -1.0, np.float32)  # its |corr|, decreasing; -1: no candidate yet
    block = torch.empty(min(rows, n) * n)  # reused: [rows, n - s] blocks
    candidate = ok.numpy()  # [n] bool
    for s in range(0, n, rows):
        e = min(n, s + rows)
        c = torch.mm(zt[s:e], z[:, s:], out=block[:(e - s) * (n - s)].view(e - s, n - s))  # [b, n - s]
        _top_abs(c.numpy(), candidate, s, e, best, partner, corr)
    return partner, corr


@numba.njit(nogil=True, cache=True)
def _top_abs(c, candidate, s, e, best, partner, corr):  # pragma: no cover - compiled
    """Fold the correlations ``c [e - s, n - s]`` of stocks ``s..e-1`` with stocks ``s..n-1`` into the
    running top ``k`` (``best`` |corr| decreasing, ``partner``, signed ``corr``; all ``[n, k]``): rows
    ``s..e-1`` take their candidates ``s..n-1``, stocks ``e..n-1`` take ``s..e-1`` (the block's columns).
    Only ``candidate`` stocks pick and are picked; nobody picks itself; ties keep the earlier candidate."""
    b, m = c.shape
    k = best.shape[1]
    for i in range(b):
        me = s + i
        if not candidate[me]:
            continue
        kth = best[me, k - 1]  # the bar a candidate must pass (-1 while the top k is not full)
        for j0 in range(0, m, 16):  # 16 values at a time: one vectorised max, then a look only if one passes
            j1 = min(m, j0 + 16)
            top = np.float32(0.0)
            for j in range(j0, j1):
                top = max(top, abs(c[i, j]))
            if top > kth:
                for j in range(j0, j1):
                    if abs(c[i, j]) > kth and j != i and candidate[s + j]:
                        kth = _insert(best, partner, corr, me, s + j, c[i, j])
    kth16 = np.empty(16, np.float32)
    for t in range(e - s, m, 16):  # the columns 16 at a time: each row's 16 values are one cache line
        w = min(m, t + 16) - t
        for q in range(16):
            kth16[q] = best[s + t + q, k - 1] if q < w and candidate[s + t + q] else np.inf  # inf: picks nobody
        for i in range(b):
            if candidate[s + i]:
                hit = False
                if w == 16:  # a fixed count of comparisons, vectorised; the look below only on a hit
                    for q in range(16):
                        hit |= abs(c[i, t + q]) > kth16[q]
                else:
                    hit = True
                if hit:
                    for q in range(w):
                        if abs(c[i, t + q]) > kth16[q]:
                            kth16[q] = _insert(best, partner, corr, s + t + q, s + i, c[i, t + q])


@numba.njit(nogil=True, cache=True)
def _insert(best, partner, corr, me, other, value):  # pragma: no cover - compiled
    """Put ``other`` (correlation ``value``, ``|value|`` above ``me``'s k-th) into ``me``'s sorted top k,
    after any equal ``|corr|``; returns the new k-th ``|corr|``."""
    a = abs(value)
    p = best.shape[1] - 1
    while p > 0 and best[me, p - 1] < a:
        best[me, p] = best[me, p - 1]
        partner[me, p] = partner[me, p - 1]
        corr[me, p] = corr[me, p - 1]
        p -= 1
    best[me, p] = a
    partner[me, p] = other
    corr[me, p] = value
    return best[me, best.shape[1] - 1]


def residual_returns(returns: np.ndarray, valid: np.ndarray, sector_id: np.ndarray, how: str) -> np.ndarray:
    """Returns with each day's common part removed, the input of the correlations.

    ``market``: minus the day's mean over valid stocks. ``sector``: minus the mean of the stock's sector
    that day (valid, labelled stocks; an unlabelled stock or a sector of one falls back to the market
    mean). Each day uses that day's returns only, so no look-ahead is added. Without it, a kNN on raw
    returns spends its edges on the market and sector factors, which every model already sees through the
    ``same_sector`` edge attribute and the sector features; the residual correlations are what reveals
    groups the metadata does not name.

    Shapes: ``returns [D, N]`` (NaN missing), ``valid [D, N]``, ``sector_id [D, N]`` (< 0 unknown) ->
    ``[D, N]`` float64, NaN where ``returns`` is NaN.
    """
    if how not in RESIDUALS:
        raise InputError(f"model.graph.residual must be one of {list(RESIDUALS)}, got {how!r}")
    if how == "none":
        return returns
    r = returns
    obs = valid & np.isfinite(r)  # [D, N] stocks that define the day's means
    market = np.where(obs, r, 0.0).sum(1, keepdims=True) / np.maximum(obs.sum(1, keepdims=True), 1)  # [D, 1]
    out = r - market
    if how == "market":
        return out
    n_groups = int(sector_id.max()) + 2 if sector_id.size else 1
    for d in range(r.shape[0]):  # one bincount per day: [D] loop over vectorised [N] work
        g = np.where(obs[d] & (sector_id[d] >= 0), sector_id[d] + 1, 0)  # group 0: unlabelled / missing
        total = np.bincount(g, weights=np.where(obs[d], r[d], 0.0), minlength=n_groups)
        count = np.bincount(g, minlength=n_groups)
        own = np.isfinite(r[d]) & (g > 0) & (count[g] > 1)  # sectors of one keep the market residual
        out[d, own] = r[d, own] - (total[g] / np.maximum(count[g], 1))[own]
    return out


class DayGraphBuilder:
    """Return-correlation kNN graph of each day, cached per date.

    For day d, among the stocks valid on d: correlations over days d-W+1..d (``window_correlation``),
    each stock's ``k`` largest-|corr| partners (itself excluded), symmetrised (i-j kept if either picked
    the other). ``graph(d, stock_idx)`` keeps the edges among ``stock_idx`` and adds exactly one
    self-loop per requested stock with attributes [1, sector known on d, market known on d].

    Args:
        returns: ``[D, N]`` daily returns (NaN = missing), the value known at the close of each day.
        valid: ``[D, N]`` bool, stock tradable / sampled on that day.
        sector_id, market_id: int ids as of each day ``[D, N]`` (or static ``[N]``), < 0 where the
            stock has no label that day (None: all unknown). An unlabelled stock shares no group:
            ``same_sector = same_market = 0`` on all its edges, self-loop included.
        window: W, days in the correlation window (default 60).
        k: neighbours per stock (default 10).
        min_periods: observations a stock needs in the window (default max(2, W // 2)).
        cache_days: days kept in the LRU cache (default 1024; ~12 bytes per edge, ~0.3-0.6 MB per
            4,000-stock day at k=10).
        residual: ``none`` | ``market`` | ``sector``: correlate returns net of that day's market or
            sector mean (``residual_returns``).

    Shapes: ``graph`` returns ``edge_index [2, E]`` long into 0..len(stock_idx)-1 and
    ``edge_attr [E, 3]`` float32.
    """

    def __init__(self, returns, valid, sector_id=None, market_id=None, window: int = 60, k: int = 10,
                 min_periods: int | None = None, cache_days: int = 1024, residual: str = "none"):
        self.returns = _as_numpy(returns, np.float64)  # [D, N]
        self.valid = _as_numpy(valid, bool)  # [D, N]
        if self.returns.ndim != 2 or self.returns.shape != self.valid.shape:
            raise ValueError(f"returns {self.returns.shape} and valid {self.valid.shape} must both be [D, N]")
        self.sector_id = self._ids(sector_id, "sector_id")  # [D, N]
        self.market_id = self._ids(market_id, "market_id")  # [D, N]
        self.returns = residual_returns(self.returns, self.valid, self.sector_id, residual)  # [D, N]
        if window < 2 or k < 1:
            raise InputError(f"model.graph.window must be >= 2 and model.graph.k >= 1, got {window}, {k}")
        self.window, self.k = window, k
        self.min_periods = max(2, window // 2) if min_periods is None else min_periods
        self.cache_days = cache_days
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()  # the batch-prefetch thread and the loop may both ask for a day

    def __getstate__(self):  # DataLoader workers started by spawn receive a pickled copy
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def day_edges(self, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Symmetrised kNN edges of day ``d`` in panel stock indices: ``(src [E], dst [E], corr [E])``,
        no self-loops. Cached."""
        with self._lock:
            if d in self._cache:
                self._cache.move_to_end(d)
                return self._cache[d]
            if not 0 <= d < self.returns.shape[0]:
                raise ValueError(f"day index {d} outside the panel's 0..{self.returns.shape[0] - 1}")
            edges = self._build(d)
            self._cache[d] = edges
            if len(self._cache) > self.cache_days:
                self._cache.popitem(last=False)
            return edges

    def _build(self, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        stocks = np.flatnonzero(self.valid[d])  # [n]
        empty = (np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32))
        if len(stocks) < 2:
            return empty
        n = len(stocks)
        # the window of days d-W+1..d only (no look-ahead), standardised without being copied out
        z, ok = _unit_columns(self.returns, max(0, d - self.window + 1), d + 1, stocks, self.min_periods)
        partner, corr = top_partners(torch.from_numpy(z), torch.from_numpy(ok), min(self.k, n - 1))  # [n, k]
        keep = ~np.isnan(corr)  # [n, k] real candidates only
        src, dst, corr = np.nonzero(keep)[0], partner[keep], corr[keep]
        # symmetrise: i-j kept if either picked the other, with either pick's corr (the same dot product)
        key, first = np.unique(np.concatenate([src * n + dst, dst * n + src]), return_index=True)
        corr = np.concatenate([corr, corr])[first]
        src, dst = key // n, key % n
        # int32 stock indices: the cache holds every visited day, so its size is the panel's days x edges
        return stocks[src].astype(np.int32), stocks[dst].astype(np.int32), corr

    def graph(self, d: int, stock_idx) -> tuple[torch.Tensor, torch.Tensor]:
        """Edges of day ``d`` among ``stock_idx`` (panel indices), re-indexed to 0..len(stock_idx)-1,
        plus one self-loop per stock. Neighbours outside ``stock_idx`` are dropped."""
        stock_idx = _as_numpy(stock_idx, np.int64)  # [B_d]
        n_panel = self.returns.shape[1]
        if stock_idx.size and (stock_idx.min() < 0 or stock_idx.max() >= n_panel):
            raise ValueError(f"stock_idx must lie in 0..{n_panel - 1}")
        if len(np.unique(stock_idx)) != len(stock_idx):
            raise ValueError("stock_idx has duplicates; each stock appears once in a day's graph")
        src, dst, corr = self.day_edges(d)
        pos = np.full(n_panel, -1, np.int64)
        pos[stock_idx] = np.arange(len(stock_idx))
        keep = (pos[src] >= 0) & (pos[dst] >= 0)
        src, dst, corr = src[keep], dst[keep], corr[keep]
        loops = np.arange(len(stock_idx))
        edge_index = np.stack([np.concatenate([pos[src], loops]), np.concatenate([pos[dst], loops])])  # [2, E]
        all_src, all_dst = np.concatenate([src, stock_idx]), np.concatenate([dst, stock_idx])
        attr = np.stack([
            np.concatenate([corr, np.ones(len(stock_idx), np.float32)]),
            self._same(self.sector_id[d], all_src, all_dst),
            self._same(self.market_id[d], all_src, all_dst),
        ], axis=1)  # [E, 3]
        return torch.from_numpy(edge_index), torch.from_numpy(attr.astype(np.float32))

    def _ids(self, ids, name: str) -> np.ndarray:
        """Label ids as ``[D, N]`` (a static ``[N]`` vector is repeated over the days; None: all -1)."""
        D, N = self.returns.shape
        if ids is None:
            return np.full((D, N), -1, dtype=np.int32)
        ids = _as_numpy(ids, np.int32)
        if ids.shape == (N,):
            return np.broadcast_to(ids, (D, N))
        if ids.shape != (D, N):
            raise ValueError(f"{name} must be [N={N}] or [D={D}, N={N}], got {list(ids.shape)}")
        return ids

    @staticmethod
    def _same(ids: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """1.0 where both ends share a known id, else 0 (unknown ids are < 0)."""
        return ((ids[src] == ids[dst]) & (ids[src] >= 0)).astype(np.float32)
