"""atft: training and evaluation of the ATFT-GAT-FAN stock-return model."""

import os

# PyTorch's CPU allocator backs large blocks with transparent huge pages when this is set. Without it,
# every >32 MB activation is page-faulted afresh each step (glibc returns such blocks to the OS); the
# training step measured 1.8x faster with it (benchmarks/results/latest.md). It must be set before torch
# is imported, so it lives here; an explicit value in the environment wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
