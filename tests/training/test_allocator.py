"""glibc malloc settings (atft.training.allocator): freed activation-sized blocks are reused, not re-faulted."""

import json
import platform
import subprocess
import sys

import pytest

from atft.errors import InputError
from atft.training.allocator import tune_malloc

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# blocks of 2..20 MB (and 40-60 MB: above any mmap threshold), each written in full and freed, as a training
# step's activations are: with glibc's dynamic threshold each of the first pass's growing blocks is a fresh
# mapping (one fault per page); with the threshold fixed at 32 MB the small ones come from the heap, whose
# pages stay mapped; in heap mode the large ones do too
_CHILD = """
import ctypes, json, resource, sys
from atft.training.allocator import heap_for_training, tune_malloc
applied = tune_malloc(sys.argv[1])
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def faults(sizes):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        for mb in sizes:
            p = libc.malloc(mb << 20)
            ctypes.memset(p, 1, mb << 20)
            libc.free(p)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

result = {"small": faults(range(2, 21)), "large": faults(range(40, 61, 10)), "applied": applied}
result["switched"] = heap_for_training(sys.argv[1])  # what train() calls once the data is loaded
result["large_after_switch"] = faults(range(40, 61, 10))
print(json.dumps(result))
"""


def _faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt settings are glibc's")
def test_fixed_threshold_and_heap_mode_reuse_freed_blocks_instead_of_faulting_them_afresh():
    default, threshold, heap = _faults("glibc"), _faults("threshold"), _faults("heap")
    assert threshold["applied"] == {"mode": "threshold", "applied": True, "mmap_threshold_mb": 32,
                                    "trim_threshold_mb": 64}
    assert heap["applied"] == {"mode": "heap", "applied": True, "mmap": False, "trim": False}
    small, large = 3 * sum(range(2, 21)) * 256, 3 * 150 * 256  # 4 KB pages written in all
    # glibc's default maps the first pass of growing blocks afresh (the threshold trails each freed size)
    assert default["small"] > 0.25 * small, default
    assert threshold["small"] < 0.1 * small and threshold["small"] * 4 < default["small"], (threshold, default)
    # above 32 MB only heap mode reuses: the other two map and fault every block on every pass
    assert min(default["large"], threshold["large"]) > 0.5 * large, (default, threshold)
    assert heap["large"] < 0.4 * large and heap["small"] < 0.1 * small, heap
    # the switch before training is staged mode's alone
    assert not default["switched"] and not threshold["switched"] and not heap["switched"]
    assert threshold["large_after_switch"] > 0.5 * large


@pytest.mark.skipif(not GLIBC, reason="mallopt settings are glibc's")
def test_staged_mode_maps_large_blocks_while_loading_and_reuses_them_once_training_starts():
    staged = _faults("staged")
    assert staged["applied"] == {"mode": "staged", "applied": True, "mmap_threshold_mb": 32,
                                 "trim_threshold_mb": 64, "training": "heap"}
    small, large = 3 * sum(range(2, 21)) * 256, 3 * 150 * 256
    assert staged["small"] < 0.1 * small, staged
    assert staged["large"] > 0.5 * large, staged  # loading: large blocks mapped, returned to the kernel on free
    assert staged["switched"] and staged["large_after_switch"] < 0.4 * large, staged  # training: reused


def test_malloc_mode_is_validated_and_glibc_leaves_the_defaults():
    assert tune_malloc("glibc") == tune_malloc(None) == {"mode": "glibc", "applied": False,
                                                        "why": "glibc's defaults requested"}
    with pytest.raises(InputError, match="train.trainer.malloc=jemalloc"):
        tune_malloc("jemalloc")
