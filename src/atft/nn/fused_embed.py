"""The variable selection network's per-variable embeddings and their mixing, fused into compiled CPU kernels.

``VariableSelectionNetwork.embed`` followed by the weighting by ``v`` is, for each row ``r`` (a sample's
time step) and variable ``f``, a function of two scalars ``x[r, f]`` and ``v[r, f]``:

    xi   = x w_e + b_e                          eta = x w_in + b_in               (d_e wide)
    gate = ELU(eta) W_glu + b_glu               (2 d_e wide; its halves a | b)
    z    = xi + a * sigmoid(b)                  n   = (z - mean z) / sqrt(var z + 1e-5)
    out[r, f d_e : (f + 1) d_e] = v (n + beta)

(``w_in``, ``b_in``, ``W_glu``, ``b_glu`` are the GRN's weights folded in ``variable_selection``.) The
ops path computes this as a dozen ``[F, B*T, d_e]`` tensors, each written to memory and read back
(``[F, B*T, d_e]`` is ~60 MB per tensor at a 1,024-sample batch of 20 steps and 80 variables), and keeps
six of them for the backward pass. Here one compiled pass per block of rows keeps everything in
cache-sized scratch and writes only the output; the backward pass recomputes the forward from ``x``
block by block instead of reading stored activations, so the function keeps nothing but its inputs.
The exponential is a vectorisable polynomial (range reduction to ``|r| <= ln 2 / 2``, degree 7, within
a few float32 ulp of ``exp``), so the compiler can run eight rows at once; NaN propagates, large
arguments saturate (``exp`` of more than 88 gives 1.65e38 instead of inf).

Threads: rows are split into one contiguous range per intra-op thread (``torch.get_num_threads()``)
and run in a thread pool (the kernels release the GIL). The parameter gradients are summed over each
block of rows in float32, over a range's blocks in float64 and then over the ranges in a fixed order, so
a run is reproducible at a given thread count.

Used by ``VariableSelectionNetwork`` for float32 tensors on the CPU outside autocast and compilation
(``fused_applies``); everything else takes the ops path, which the tests compare this with.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch

BLOCK = 128  # rows per block: one variable's scratch ([2 d_e, BLOCK] float32) stays in L1, a block's output in L2
EPS = 1e-5   # F.layer_norm's default
LOG2E = np.float32(1.4426950408889634)
LN2_HI = np.float32(0.693145751953125)        # ln 2 in two parts: k * LN2_HI is exact for |k| < 2^9
LN2_LO = np.float32(1.428606765330187e-06)
FLAGS = {"nsz", "arcp", "contract", "reassoc"}  # no nnan / ninf: NaN and inf keep their meaning


@numba.njit(nogil=True, fastmath=FLAGS, cache=True, inline="always")
def _exp(x, out, bits):
    """``out = exp(x)`` for float32 arrays (``out`` may be ``x``); ``bits``: int32 scratch of the same length."""
    for i in range(x.shape[0]):
        t = x[i]
        if t < -87.0:                               # comparisons leave NaN as it is
            t = np.float32(-87.0)
        if t > 88.0:
            t = np.float32(88.0)
        k = np.floor(t * LOG2E + np.float32(0.5))
        r = (t - k * LN2_HI) - k * LN2_LO
        p = np.float32(1.0 / 5040.0)
        p = p * r + np.float32(1.0 / 720.0)
        p = p * r + np.float32(1.0 / 120.0)
        p = p * r + np.float32(1.0 / 24.0)
        p = p * r + np.float32(1.0 / 6.0)
        p = p * r + np.float32(0.5)
        p = p * r + np.float32(1.0)
        out[i] = p * r + np.float32(1.0)
        bits[i] = (np.int32(k) + np.int32(127)) << np.int32(23)  # 2^k as float32 bits (k in -126..127)
    scale = bits.view(np.float32)
    for i in range(x.shape[0]):
        out[i] *= scale[i]


@numba.njit(nogil=True, fastmath=FLAGS, cache=True, inline="always")
def _block_forward(x, a, m, f, we, be, w_in, b_in, w_glu, b_glu, xb, xi, h, gate, sig, mu, rstd, tmp, bits):
    """Variable ``f`` on rows ``a .. a+m-1``: fills ``xb`` (x), ``h`` (ELU(eta); ELU'(eta) is 1 where
    ``h > 0`` and ``h + 1`` elsewhere), ``gate``, ``sig`` (sigmoid of the gate's second half), ``xi``
    (then z), ``mu`` and ``rstd`` (z's mean and 1/std)."""
    d = we.shape[1]
    for i in range(m):
        xb[i] = x[a + i, f]
    for j in range(d):
        for i in range(m):
            xi[j, i] = xb[i] * we[f, j] + be[f, j]
            h[j, i] = xb[i] * w_in[f, j] + b_in[f, j]
        _exp(h[j, :m], tmp[:m], bits[:m])
        for i in range(m):
            e = h[j, i]
            h[j, i] = e if e > 0 else tmp[i] - np.float32(1.0)
    for k in range(2 * d):
        for i in range(m):
            gate[k, i] = b_glu[f, k]
        for j in range(d):
            w = w_glu[f, j, k]
            for i in range(m):
                gate[k, i] += h[j, i] * w
    for i in range(m):
        mu[i] = 0.0
    for j in range(d):
        for i in range(m):
            tmp[i] = -gate[d + j, i]
        _exp(tmp[:m], tmp[:m], bits[:m])
        for i in range(m):
            s = np.float32(1.0) / (np.float32(1.0) + tmp[i])
            sig[j, i] = s
            z = xi[j, i] + gate[j, i] * s
            xi[j, i] = z
            mu[i] += z
    inv_d = np.float32(1.0 / d)
    for i in range(m):
        mu[i] *= inv_d
        rstd[i] = 0.0
    for j in range(d):
        for i in range(m):
            c = xi[j, i] - mu[i]
            rstd[i] += c * c
    for i in range(m):
        rstd[i] = np.float32(1.0) / np.sqrt(rstd[i] * inv_d + np.float32(EPS))


@numba.njit(nogil=True, cache=True, inline="always")
def _scratch(d):
    """One thread's scratch for ``_block_forward`` (inlined: allocated in the kernel, the compiler knows the
    arrays do not overlap and vectorises the loops over rows; a call in between made the forward 1.5x slower)."""
    xb, mu, rstd, tmp = np.empty(BLOCK, np.float32), np.empty(BLOCK, np.float32), np.empty(BLOCK, np.float32), \
        np.empty(BLOCK, np.float32)
    xi, h, sig = np.empty((d, BLOCK), np.float32), np.empty((d, BLOCK), np.float32), np.empty((d, BLOCK), np.float32)
    return xb, xi, h, np.empty((2 * d, BLOCK), np.float32), sig, mu, rstd, tmp, np.empty(BLOCK, np.int32)


@numba.njit(nogil=True, fastmath=FLAGS, cache=True)
def _forward(x, v, we, be, w_in, b_in, w_glu, b_glu, beta, out, r0, r1):
    """``out[r]`` for rows ``r0 .. r1-1`` (module docstring)."""
    n_var, d = we.shape
    xb, xi, h, gate, sig, mu, rstd, tmp, bits = _scratch(d)
    for a in range(r0, r1, BLOCK):
        m = min(BLOCK, r1 - a)
        for f in range(n_var):
            _block_forward(x, a, m, f, we, be, w_in, b_in, w_glu, b_glu, xb, xi, h, gate, sig, mu, rstd, tmp, bits)
            for i in range(m):
                vv = v[a + i, f]
                for j in range(d):
                    out[a + i, f * d + j] = vv * ((xi[j, i] - mu[i]) * rstd[i] + beta[f, j])


@numba.njit(nogil=True, fastmath=FLAGS, cache=True)
def _backward(x, v, we, be, w_in, b_in, w_glu, b_glu, beta, g_out, g_x, g_v, acc_d, acc_glu, acc_w, r0, r1):
    """Gradients for rows ``r0 .. r1-1``: ``g_x``, ``g_v`` (their rows), and the parameter gradients summed
    over these rows, in float64: ``acc_d[0..4] [F, d]`` = w_e, b_e, w_in, b_in, beta; ``acc_glu [F, 2d]`` =
    b_glu; ``acc_w [F, d, 2d]`` = W_glu."""
    n_var, d = we.shape
    xb, xi, h, gate, sig, mu, rstd, tmp, bits = _scratch(d)
    ge = np.empty((d, BLOCK), np.float32)     # d loss / d e, then d / dz
    gg = np.empty((2 * d, BLOCK), np.float32)  # d / d gate
    gx = np.empty(BLOCK, np.float32)
    s1 = np.empty(BLOCK, np.float32)
    s2 = np.empty(BLOCK, np.float32)
    inv_d = np.float32(1.0 / d)
    for a in range(r0, r1, BLOCK):
        m = min(BLOCK, r1 - a)
        for f in range(n_var):
            _block_forward(x, a, m, f, we, be, w_in, b_in, w_glu, b_glu, xb, xi, h, gate, sig, mu, rstd, tmp, bits)
            for i in range(m):
                s1[i] = 0.0  # sum_j ge_j
                s2[i] = 0.0  # sum_j ge_j n_j
                gx[i] = 0.0  # d / dv, then d / dx
            for j in range(d):   # xi becomes n (the normalised z)
                for i in range(m):
                    go = g_out[a + i, f * d + j]
                    nj = (xi[j, i] - mu[i]) * rstd[i]
                    xi[j, i] = nj
                    gx[i] += go * (nj + beta[f, j])
                    g = go * v[a + i, f]
                    ge[j, i] = g
                    s1[i] += g
                    s2[i] += g * nj
            for i in range(m):
                g_v[a + i, f] = gx[i]
                gx[i] = 0.0
                s1[i] *= inv_d
                s2[i] *= inv_d
            for j in range(d):
                t_beta = t_w = t_b = np.float32(0.0)  # a block's sums in float32, the totals in float64
                for i in range(m):
                    t_beta += ge[j, i]
                    g = rstd[i] * (ge[j, i] - s1[i] - xi[j, i] * s2[i])  # d / dz_j = d / dxi_j
                    ge[j, i] = g
                    t_w += xb[i] * g
                    t_b += g
                    gx[i] += g * we[f, j]
                    s = sig[j, i]
                    gg[j, i] = g * s
                    gg[d + j, i] = g * gate[j, i] * s * (np.float32(1.0) - s)
                acc_d[4, f, j] += t_beta
                acc_d[0, f, j] += t_w
                acc_d[1, f, j] += t_b
            for k in range(2 * d):
                t = np.float32(0.0)
                for i in range(m):
                    t += gg[k, i]
                acc_glu[f, k] += t
                for j in range(d):
                    t = np.float32(0.0)
                    for i in range(m):
                        t += h[j, i] * gg[k, i]
                    acc_w[f, j, k] += t
            for j in range(d):
                for i in range(m):
                    tmp[i] = 0.0
                for k in range(2 * d):
                    w = w_glu[f, j, k]
                    for i in range(m):
                        tmp[i] += w * gg[k, i]  # d / dh_j
                t_w = t_b = np.float32(0.0)
                for i in range(m):
                    hj = h[j, i]
                    g = tmp[i] * (np.float32(1.0) if hj > 0 else hj + np.float32(1.0))  # ELU'(eta) = exp(eta) for eta <= 0
                    t_w += xb[i] * g
                    t_b += g
                    gx[i] += g * w_in[f, j]
                acc_d[2, f, j] += t_w
                acc_d[3, f, j] += t_b
            for i in range(m):
                g_x[a + i, f] = gx[i]


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _ranges(rows: int) -> list[tuple[int, int]]:
    """One contiguous range of rows per intra-op thread (whole blocks, the last one shorter)."""
    blocks = -(-rows // BLOCK)
    threads = max(1, min(torch.get_num_threads(), blocks))
    per = -(-blocks // threads) * BLOCK
    return [(a, min(rows, a + per)) for a in range(0, rows, per)]


def _run(kernel, ranges: list[tuple[int, int]], args_of) -> None:
    """``kernel(*args_of(k), *ranges[k])`` for every range, one pool thread each; ``args_of(k)``: the
    arguments of range ``k``."""
    if len(ranges) == 1:
        kernel(*args_of(0), *ranges[0])
        return
    with _pools_lock:
        pool = _pools.get(len(ranges))
        if pool is None:
            pool = _pools[len(ranges)] = ThreadPoolExecutor(len(ranges), thread_name_prefix="atft-embed")
    for future in [pool.submit(kernel, *args_of(k), *r) for k, r in enumerate(ranges)]:
        future.result()


class FusedEmbedding(torch.autograd.Function):
    """``(x [R, F], v [R, F], w_e, b_e, w_in, b_in [F, d], W_glu [F, d, 2d], b_glu [F, 2d], beta [F, d])
    -> out [R, F*d]`` (module docstring)."""

    @staticmethod
    def forward(ctx, x, v, we, be, w_in, b_in, w_glu, b_glu, beta):
        inputs = [t.detach().contiguous() for t in (x, v, we, be, w_in, b_in, w_glu, b_glu, beta)]
        ctx.save_for_backward(*inputs)
        rows, (n_var, d) = x.shape[0], we.shape
        out = torch.empty(rows, n_var * d, dtype=torch.float32)
        arrays = [t.numpy() for t in inputs] + [out.numpy()]
        _run(_forward, _ranges(rows), lambda k: arrays)
        return out

    @staticmethod
    def backward(ctx, g_out):
        inputs = ctx.saved_tensors
        x, we = inputs[0], inputs[2]
        rows, (n_var, d) = x.shape[0], we.shape
        ranges = _ranges(rows)
        g_x, g_v = torch.empty_like(x), torch.empty_like(x)
        acc_d = np.zeros((len(ranges), 5, n_var, d))
        acc_glu = np.zeros((len(ranges), n_var, 2 * d))
        acc_w = np.zeros((len(ranges), n_var, d, 2 * d))
        g = g_out.detach().to(torch.float32).contiguous().numpy()
        arrays = [t.numpy() for t in inputs] + [g, g_x.numpy(), g_v.numpy()]
        _run(_backward, ranges, lambda k: [*arrays, acc_d[k], acc_glu[k], acc_w[k]])
        d_sum = torch.from_numpy(acc_d.sum(0)).float()
        return (g_x, g_v, d_sum[0], d_sum[1], d_sum[2], d_sum[3], torch.from_numpy(acc_w.sum(0)).float(),
                torch.from_numpy(acc_glu.sum(0)).float(), d_sum[4])


def fused_applies(*tensors: torch.Tensor) -> bool:
    """Whether the fused kernels can stand in for the ops path: float32 CPU tensors, no autocast, not
    while ``torch.compile`` traces."""
    if torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu"):
        return False
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
