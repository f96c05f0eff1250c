"""The build's compiled (numba) kernels: rolling windows over each stock's rows, and the per-stock features
made of them (``compiled_features``).

They live in one file on purpose: numba keys a kernel's on-disk cache by the time stamp of the file that
defines it, and a kernel that calls another compiles the callee into itself, so a kernel calling one
defined in another file would keep running a stale copy after that file changed.

Windows (``window_kernel``, ``stock_window``; ``rolling`` explains what a window is): one pass per window
over each stock's rows, sliding the window's sums (for a standard deviation, of deviations from a
reference moved to the window's mean every ``k`` rows and their squares) and, for minima and maxima, van
Herk / Gil-Werman's block prefix and suffix extremes. No look-ahead, not even in the last digit: the value
at a stock's day ``t`` is computed from its days ``<= t`` only, by a sequence of operations that depends
on the position of ``t`` in the stock's history and nothing later; the leakage tests compare builds bit
for bit.

Precision and exactness: a running value is recomputed from the window's values whenever the window
becomes complete again after a missing value and whenever the terms added and removed since the last
recompute exceed it ``LOST_DIGITS`` times (a large value leaving a window of small ones; for a standard
deviation, a variance that small beside the sums of squares), so at least ~12 significant digits survive.
A window whose values are all equal (a halted stock, a run of zeros) gets exactly its value as mean, a
sum of exactly ``k`` times it and a standard deviation of exactly 0, as polars and pandas give; so a
window without a single gain has a mean gain of exactly 0 and ties stay ties in a per-date rank.

Features (``stock_features_kernel``): for each stock, the helper columns of ``features.daily_inputs``
(``DAILY``) and the windows a set of features reads go into scratch rows one stock long, and each
feature's arithmetic (``OPS``, named by ``compiled_features.SPECS``) is written into its result row.
"""

from __future__ import annotations

import math

import numba
import numpy as np

STATS = ("sum", "mean", "std", "sqmean", "min", "max")
# a running value is recomputed from the window when the terms it was updated with since the last
# recompute exceed it this many times (fewer than ~12 of float64's 16 digits would be left)
LOST_DIGITS = 1e4
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
def window_kernel(x, starts, lengths, k, stat, out):
    """One window statistic for the stocks ``starts`` / ``lengths`` (rows of ``x`` and ``out``)."""
    scratch = np.empty(lengths.max() if len(lengths) else 0)
    for s in range(len(starts)):
        stock_window(x, starts[s], lengths[s], k, stat, out, scratch)


ANNUAL = math.sqrt(252.0)
LN2 = math.log(2)

# daily helper columns (``features.daily_inputs``), rows of the per-stock scratch
DAILY = ("Open", "High", "Low", "Close", "Volume", "DollarVolume", "_r", "_hi", "_lo", "_co", "_gap",
         "_intraday", "_lv", "_dv", "_lr", "_hl", "_gain", "_loss", "_down", "_illiq", "_gk")
INPUTS = DAILY[:6]  # read from the frame
(OPEN, HIGH, LOW, CLOSE, VOLUME, DOLLAR, R, HI, LO, CO, GAP, INTRA, LV, DV, LR, HL, GAIN, LOSS, DOWN, ILLIQ,
 GK) = range(len(DAILY))
# the arithmetic on top of the windows w0, w1 (and the row's own helper values); comments: the expression
OPS = ("exp_sum", "exp_diff", "annual", "parkinson", "annual_sqrt", "vol_ratio", "close_gap", "ratio_gap",
       "rsi", "macd", "macd_signal", "macd_hist", "bollinger_pos", "bollinger_width", "stoch", "volume_ratio",
       "zscore", "log", "ratio", "log_eps", "daily", "close_location", "mean")
(EXP_SUM, EXP_DIFF, ANNUAL_OP, PARKINSON, ANNUAL_SQRT, VOL_RATIO, CLOSE_GAP, RATIO_GAP, RSI, MACD, MACD_SIGNAL,
 MACD_HIST, BOLL_POS, BOLL_WIDTH, STOCH, VOLUME_RATIO, ZSCORE, LOG, RATIO, LOG_EPS, DAILY_OP, CLOSE_LOCATION,
 MEAN) = range(len(OPS))


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
def stock_features_kernel(cols, starts, lengths, jump, need, win_col, win_stat, win_k, ops, w0, w1, column, macd,
                          out):
    """The features ``ops`` of the stocks ``starts`` / ``lengths`` into their rows of ``out[F, rows]``.

    ``cols``: the ``INPUTS`` columns; ``need``: which ``DAILY`` columns to compute; ``win_col`` / ``win_stat``
    / ``win_k``: the windows (a ``DAILY`` row, a ``STATS`` code, k); per feature: its op, the rows of its
    windows ``w0`` / ``w1`` (``len(win_col)``: none), its ``DAILY`` row ``column`` (op ``daily``); ``macd``:
    whether any op reads the MACD line."""
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
            _feature(ops[f], w[w0[f]], w[w1[f]], d, column[f], line, signal, n, out[f, a:a + n])
