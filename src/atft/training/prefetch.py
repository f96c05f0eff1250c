"""One batch ahead on a background thread, for loaders without worker processes (``num_workers=0``).

With ``num_workers=0`` a DataLoader builds each batch in the training loop's own thread, between two
steps: on the 5M-row panel that is ~60 ms per batch (a day's graph the first time it is visited, the
windows gathered), ~5% of the epoch, during which the optimiser waits. A worker process would overlap it
but holds its own copy of the graph cache outside the training process. Here a single background thread
builds batch ``k+1`` while step ``k`` runs: the sampler is read one batch ahead and the dataset hands
out what the thread built. The batches, their order and their contents are those of the plain loader;
the graph kernels and torch's gathers release the GIL, so the thread competes only for the cores.

One thread per data module serves all of its loaders (training, validation, scoring), so batches are
built one at a time, in the order they are asked for, as in the loop itself.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from torch.utils.data import Dataset, Sampler


class Prefetcher:
    """The background thread, started on first use and shared by the loaders of one data module."""

    def __init__(self):
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, fn, *args) -> Future:
        """``fn(*args)`` on the thread, after what was submitted before."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="atft-batch")
            return self._pool.submit(fn, *args)

    def close(self) -> None:
        """Stop the thread (after the batch it is building, if any; queued ones are cancelled)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __getstate__(self):  # a pickled data module (spawned DDP ranks) starts without a thread
        return {}

    def __setstate__(self, state):
        self.__init__()

    def wrap(self, dataset: Dataset, sampler: Sampler) -> tuple[Dataset, Sampler]:
        """``(dataset, sampler)`` for a ``DataLoader(..., batch_size=None, num_workers=0)`` that reads ahead."""
        ahead = PrefetchedDataset(dataset, self)
        return ahead, LookaheadSampler(sampler, ahead)


class PrefetchedDataset(Dataset):
    """``dataset`` whose items come from the prefetch thread when they were submitted (``prefetch``).

    ``pending`` (at most two batches) is only touched by the loop's thread: the sampler and the DataLoader's
    fetch both run there when ``num_workers=0``."""

    def __init__(self, dataset: Dataset, prefetcher: Prefetcher):
        self.dataset, self.prefetcher = dataset, prefetcher
        self.pending: dict[tuple, Future] = {}

    def prefetch(self, index) -> None:
        """Start building ``dataset[index]`` unless it is already under way."""
        if tuple(index) not in self.pending:
            self.pending[tuple(index)] = self.prefetcher.submit(self.dataset.__getitem__, index)

    def forget(self) -> None:
        """Drop what was submitted and not taken (an iteration that stopped early)."""
        for future in self.pending.values():
            future.cancel()
        self.pending.clear()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        """The thread's result when it was submitted (waits for it; its exception is raised here), else built
        now, in this thread (also when ``close`` cancelled it)."""
        future = self.pending.pop(tuple(index), None)
        return future.result() if future is not None and not future.cancelled() else self.dataset[index]


class LookaheadSampler(Sampler):
    """Yields ``sampler``'s indices unchanged; before yielding one it has the next one built."""

    def __init__(self, sampler: Sampler, dataset: PrefetchedDataset):
        self.sampler, self.dataset = sampler, dataset

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        """Lightning's per-epoch call, passed on to the wrapped sampler."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator:
        self.dataset.forget()
        it = iter(self.sampler)
        ahead = next(it, None)
        if ahead is not None:
            self.dataset.prefetch(ahead)
        while ahead is not None:
            current, ahead = ahead, next(it, None)
            if ahead is not None:
                self.dataset.prefetch(ahead)  # queued behind ``current``, built while its step runs
            yield current
