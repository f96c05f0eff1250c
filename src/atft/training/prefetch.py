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
    """The background thread and the batches it has been asked to build (at most two per dataset)."""

    def __init__(self):
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[tuple[int, tuple], Future] = {}
        self._lock = threading.Lock()

    def submit(self, dataset: Dataset, index) -> None:
        """Start building ``dataset[index]`` unless it is already under way."""
        key = (id(dataset), tuple(index))
        with self._lock:
            if key in self._pending:
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="atft-batch")
            self._pending[key] = self._pool.submit(dataset.__getitem__, index)

    def take(self, dataset: Dataset, index):
        """``dataset[index]``: the thread's result when it was submitted (waits for it; its exception is
        raised here), else built now, in this thread."""
        with self._lock:
            future = self._pending.pop((id(dataset), tuple(index)), None)
        return future.result() if future is not None else dataset[index]

    def forget(self, dataset: Dataset) -> None:
        """Drop what was submitted for ``dataset`` and not taken (an iteration that stopped early)."""
        with self._lock:
            for key in [k for k in self._pending if k[0] == id(dataset)]:
                self._pending.pop(key).cancel()

    def close(self) -> None:
        """Stop the thread (after the batch it is building, if any)."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._pending.clear()
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
    """``dataset`` whose items come from the prefetcher when it built them."""

    def __init__(self, dataset: Dataset, prefetcher: Prefetcher):
        self.dataset, self.prefetcher = dataset, prefetcher

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        return self.prefetcher.take(self.dataset, index)


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
        prefetcher, inner = self.dataset.prefetcher, self.dataset.dataset
        prefetcher.forget(inner)
        it = iter(self.sampler)
        ahead = next(it, None)
        if ahead is not None:
            prefetcher.submit(inner, ahead)
        while ahead is not None:
            current, ahead = ahead, next(it, None)
            if ahead is not None:
                prefetcher.submit(inner, ahead)  # queued behind ``current``, built while its step runs
            yield current
