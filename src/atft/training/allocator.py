"""glibc malloc settings for a training process: activations reused from the heap, not page-faulted afresh.

PyTorch's CPU tensors come from ``malloc``. glibc serves a block above its mmap threshold with a fresh
``mmap`` and returns it to the kernel on ``free``, so each such tensor costs a page fault per page, and the
kernel zeroes every page, on every step. The threshold starts at 128 KB and only rises (up to 32 MB) when a
block that large is freed; in a training run the validation pass's larger batches are what raise it, so
the whole first epoch page-faults: on 200 stocks x 1,400 days (hidden 32, lookback 10, batch 1,024), epoch
1 took 1.68M minor faults and 25.1 s of system time against 178k and 9.6 s in epoch 2, and trained at
3,282 against 4,347 samples/s (docs/performance.md).

``train.trainer.malloc`` (recorded in ``config.yaml`` as ``allocator_used``):

- ``threshold`` (default): ``M_MMAP_THRESHOLD`` fixed at 32 MB (glibc's largest dynamic value) and
  ``M_TRIM_THRESHOLD`` at 64 MB (what glibc's own adjustment would set) from the start, so the first epoch
  behaves like the later ones (4,314 samples/s in epoch 1 on the run above). Blocks above 32 MB are still
  mapped per use (glibc refuses a larger threshold).
- ``heap``: no ``mmap`` for blocks at all (``M_MMAP_MAX`` 0) and no trimming: every block, the largest
  activations included, is reused from the heap; the process keeps its peak memory until it exits. For
  batches whose activations exceed 32 MB (lookback 20, 73 features, 1,024 samples: 56 MB per
  ``[F, B*T, d_e]`` tensor).
- ``staged``: ``threshold`` while the data loads, ``heap`` from the first training step
  (``heap_for_training``, called just before ``trainer.fit``): the loader's large temporaries are mapped
  and returned to the kernel when freed, as under ``threshold``, and the training loop's activations,
  the >32 MB ones included, are reused from the heap. The process keeps its training-phase peak until
  it exits. Measured (docs/performance.md): the no-stall benchmark's epoch 53% faster than ``threshold``,
  but the 608-feature panel's training peak 9.60 GB against 6.87 GB under ``threshold`` (its 200-400 MB activations come in
  many sizes, and a heap that never shrinks keeps them all), so opt-in.
- ``glibc``: leave glibc's defaults.

A no-op off glibc (macOS, musl): recorded as not applied.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # mallopt parameter numbers (malloc.h)
THRESHOLD_MB = 32  # glibc refuses larger values (HEAP_MAX_SIZE / 2 on 64-bit)
MODES = ("threshold", "staged", "heap", "glibc")


def tune_malloc(mode) -> dict:
    """Apply ``train.trainer.malloc``; what was applied, for ``config.yaml``.

    Args:
        mode: ``threshold`` | ``staged`` | ``heap`` | ``glibc`` (None: ``glibc``).

    Returns:
        ``{"mode": ..., "applied": bool, ...}``: the mmap and trim thresholds in MB and whether mmap is used.
    """
    from atft.errors import InputError

    mode = "glibc" if mode is None else str(mode)
    if mode not in MODES:
        raise InputError(f"train.trainer.malloc={mode} is not a malloc mode; expected one of {', '.join(MODES)}")
    if mode == "glibc":
        return {"mode": mode, "applied": False, "why": "glibc's defaults requested"}
    if not _on_glibc():
        return {"mode": mode, "applied": False, "why": "not glibc"}
    if mode == "heap":
        return {"mode": mode, "applied": _no_mmap_no_trim(), "mmap": False, "trim": False}
    libc = ctypes.CDLL(None)
    threshold = THRESHOLD_MB << 20
    ok = libc.mallopt(M_MMAP_THRESHOLD, threshold) and libc.mallopt(M_TRIM_THRESHOLD, 2 * threshold)
    applied = {"mode": mode, "applied": bool(ok), "mmap_threshold_mb": THRESHOLD_MB, "trim_threshold_mb": 2 * THRESHOLD_MB}
    return {**applied, "training": "heap"} if mode == "staged" else applied


def heap_for_training(mode) -> bool:
    """Under ``staged``, switch to ``heap`` for the training loop (after the data is loaded); True if applied."""
    if str(mode) != "staged" or not _on_glibc():
        return False
    return _no_mmap_no_trim()


def _on_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _no_mmap_no_trim() -> bool:
    libc = ctypes.CDLL(None)
    # mallopt's value is an int; glibc converts the trim threshold to size_t, so -1 means never trim
    return bool(libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, -1))
