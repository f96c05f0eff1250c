"""Day-batch sampler: every batch is one or more whole trading days.

The GAT must see a day's whole cross-section and nothing from another day, so the unit of sampling
is the day. A batch is ``k = round(batch_size / mean stocks per day)`` consecutive days (at least one)
of the (shuffled, when training) day order. A fixed ``k`` keeps the number of batches per epoch
constant, which the LR schedule and DDP (ranks must step together) rely on.

The order depends only on ``(seed, epoch)``, so a resumed run sees exactly the batches an
uninterrupted run would. Under DDP every rank builds the same global batch list and takes every
``world_size``-th batch, truncated to an equal count (ranks must step together).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from torch.utils.data import Sampler


def days_per_batch(counts: np.ndarray, batch_size: int) -> int:
    """Whole days per batch so that a batch holds about ``batch_size`` samples (at least one day)."""
    mean = float(np.mean(counts)) if len(counts) else 1.0
    return max(1, int(round(batch_size / max(mean, 1.0))))


class DayBatchSampler(Sampler[list[int]]):
    """Yields lists of panel day indices; use with ``DataLoader(batch_size=None)``.

    Args:
        days: ``[D_split]`` day indices of the split.
        counts: ``[D_split]`` number of usable stock-samples on each day (days with 0 are skipped).
        batch_size: approximate stock-samples per batch.
        shuffle: shuffle the day order each epoch (training).
        seed: base seed; the epoch order is ``default_rng([seed, epoch])``.
        rank, world_size: DDP shard of this process (0, 1 for a single process).
        epoch_source: returns the current epoch when iteration starts (the trainer's ``current_epoch``);
            None -> the value of :meth:`set_epoch`. Lightning passes ``set_epoch`` its count of *processed*
            epochs, which after resuming from an end-of-epoch checkpoint lags by one.
    """

    def __init__(self, days: np.ndarray, counts: np.ndarray, batch_size: int, shuffle: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1,
                 epoch_source: Callable[[], int] | None = None):
        keep = np.asarray(counts) > 0
        self.days = np.asarray(days, dtype=np.int64)[keep]
        self.counts = np.asarray(counts, dtype=np.int64)[keep]
        self.per_batch = days_per_batch(self.counts, batch_size)
        self.shuffle, self.seed = shuffle, int(seed)
        self.rank, self.world_size = int(rank), max(1, int(world_size))
        self.epoch = 0
        self.epoch_source = epoch_source

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at each epoch start (also after a resume)."""
        self.epoch = int(epoch)

    def batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch."""
        order = np.arange(len(self.days))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.days))
        days = self.days[order].tolist()
        all_batches = [days[i:i + self.per_batch] for i in range(0, len(days), self.per_batch)]
        per_rank = len(all_batches) // self.world_size if self.world_size > 1 else len(all_batches)
        return all_batches[self.rank::self.world_size][:per_rank]

    def __iter__(self) -> Iterator[list[int]]:
        if self.epoch_source is not None:
            self.epoch = int(self.epoch_source())
        yield from self.batches()

    def __len__(self) -> int:
        n = -(-len(self.days) // self.per_batch)
        return n // self.world_size if self.world_size > 1 else n
