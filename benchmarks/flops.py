"""FLOPs per sample and the machine's matmul peak, shared by the benchmarks.

FLOPs are those ``torch.utils.flop_counter.FlopCounterMode`` counts for one training step (forward +
backward): matrix products, convolutions and attention. Element-wise work (activations, norms, the GAT's
scatter) is not counted, so a model made mostly of element-wise work reads as a low FLOP/s share.

The peak is measured, not taken from a data sheet: the best of a few large square matmuls of ``dtype`` on
``device`` with the process's threads; it is the ceiling a training step's matmuls could reach here.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def step_flops(step) -> int:
    """FLOPs of one call of ``step()`` (forward + backward of one batch), as FlopCounterMode counts them."""
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_flops(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, n: int = 2048,
                      repeats: int = 5) -> float:
    """Best FLOP/s of an ``n x n @ n x n`` matmul of ``dtype`` on ``device`` over ``repeats`` timed calls."""
    device = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    a @ b  # warm-up: thread pool / cuBLAS handle
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def flop_columns(flops_per_sample: float, samples_per_s: float, peak_flops: float) -> dict:
    """``gflop_per_sample``, achieved ``gflop_per_s`` and its share of the measured peak (``peak_share``)."""
    achieved = flops_per_sample * samples_per_s
    return {"gflop_per_sample": flops_per_sample / 1e9, "gflop_per_s": achieved / 1e9,
            "peak_share": achieved / peak_flops if peak_flops > 0 else float("nan")}
