"""atft: training and evaluation of the ATFT-GAT-FAN stock-return model."""

import os
import sys

# PyTorch's CPU allocator backs large blocks with transparent huge pages when this is set. Without it,
# every >32 MB activation is page-faulted afresh each step (glibc returns such blocks to the OS); the
# training step measured 1.8x faster with it (benchmarks/results/latest.md). It must be set before torch
# is imported, so it lives here; an explicit value in the environment wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

# OpenMP threads that wait at the end of each parallel op by sleeping, not spinning. With the default (spin
# first), a thread whose partner is descheduled by another process burns its own core waiting, so a shared
# machine slows training by far more than its share of the CPU: one 2-thread training step measured 4.5x
# faster with it beside other work (docs/performance.md). Read when OpenMP starts, i.e. before torch is
# imported; an explicit value wins (``OMP_WAIT_POLICY=`` empty restores OpenMP's default).
# A program that imports torch before atft has started OpenMP already: setting the variable then changes
# nothing, so the policy in effect is recorded here as it was when torch loaded (``omp_wait_policy``).
OMP_WAIT_POLICY_SET_LATE = "torch" in sys.modules and "OMP_WAIT_POLICY" not in os.environ
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def omp_wait_policy() -> str:
    """The OpenMP wait policy this process runs with: ``OMP_WAIT_POLICY`` as OpenMP read it when torch
    loaded (``"OpenMP default ..."`` when torch was imported before atft without the variable set)."""
    if OMP_WAIT_POLICY_SET_LATE:
        return "OpenMP default (torch was imported before atft)"
    return os.environ.get("OMP_WAIT_POLICY") or "OpenMP default"

__version__ = "0.1.0"
