"""The prefetch thread: the same batches as the plain loader, built one batch ahead, errors where they belong."""

import pickle
import threading

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from atft.data.panel import load_panel
from atft.graph.day_graph import DayGraphBuilder
from atft.training.datamodule import DayBatchDataset, PanelDataModule
from atft.training.prefetch import Prefetcher
from atft.training.sampler import DayBatchSampler


def _dm(cfg):
    dm = PanelDataModule(cfg, load_panel(cfg.data.path, cfg.data, model_cfg=cfg.model))
    dm.setup("fit")
    return dm


def _epochs(dm, epochs=2):
    """Every batch of the train loader over ``epochs`` epochs (the sampler's order changes with the epoch)."""
    out = []
    for epoch in range(epochs):
        dm.current = epoch
        out.append(list(dm.train_dataloader()))
    return out


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_prefetched_loader_gives_the_plain_loaders_batches_built_on_the_thread(make_cfg, monkeypatch):
    built_on = []
    getitem = DayBatchDataset.__getitem__

    def recording(self, days):
        built_on.append(threading.current_thread().name)
        return getitem(self, days)

    monkeypatch.setattr(DayBatchDataset, "__getitem__", recording)
    plain = _dm(make_cfg("plain", **{"train.batch.prefetch_thread": False}))
    assert plain.prefetcher is None
    plain._current_epoch = lambda: getattr(plain, "current", 0)  # the trainer's epoch, without a trainer
    expected = _epochs(plain)
    assert built_on and all(name == "MainThread" for name in built_on)
    built_on.clear()
    ahead = _dm(make_cfg("ahead"))  # auto with num_workers=0: on
    ahead._current_epoch = lambda: getattr(ahead, "current", 0)
    got = _epochs(ahead)
    assert [len(e) for e in got] == [len(e) for e in expected] and len(expected[0]) > 2
    assert all(_same(a, b) for ea, eb in zip(got, expected) for a, b in zip(ea, eb))
    assert [a["date_idx"][0] for a in expected[0]] != [a["date_idx"][0] for a in expected[1]]  # epochs differ
    assert built_on and all(name.startswith("atft-batch") for name in built_on)
    # validation and test loaders go through the thread too
    plain_eval = list(plain.val_dataloader()) + list(plain.test_dataloader())
    built_on.clear()
    got_eval = list(ahead.val_dataloader()) + list(ahead.test_dataloader())
    assert len(got_eval) == len(plain_eval) and all(_same(a, b) for a, b in zip(got_eval, plain_eval))
    assert built_on and all(name.startswith("atft-batch") for name in built_on)
    ahead.teardown("fit")


class _Slow(Dataset):
    """Items are their index; records when each build starts, and can fail on one index."""

    def __init__(self, fail_on=None):
        self.started = {i: threading.Event() for i in range(10)}
        self.fail_on = fail_on

    def __len__(self):
        return 10

    def __getitem__(self, index):
        i = index[0]
        self.started[i].set()
        if i == self.fail_on:
            raise ValueError(f"bad day {i}")
        return torch.tensor(index)


class _Order(torch.utils.data.Sampler):
    def __init__(self, n=6):
        self.n, self.epochs = n, []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def __iter__(self):
        return iter([[i] for i in range(self.n)])

    def __len__(self):
        return self.n


def test_next_batch_is_built_while_the_current_one_is_used():
    prefetcher = Prefetcher()
    data, order = _Slow(), _Order()
    dataset, sampler = prefetcher.wrap(data, order)
    loader = DataLoader(dataset, sampler=sampler, batch_size=None)
    seen = []
    for batch in loader:
        i = int(batch[0])
        seen.append(i)
        if i + 1 < order.n:  # the plain loader would not start i+1 before this step returns: this would time out
            assert data.started[i + 1].wait(timeout=10), f"batch {i + 1} not started while batch {i} was in use"
    assert seen == list(range(order.n))
    sampler.set_epoch(3)
    assert order.epochs == [3]  # Lightning's per-epoch call reaches the wrapped sampler
    prefetcher.close()


def test_an_iteration_stopped_early_leaves_nothing_stale():
    prefetcher = Prefetcher()
    dataset, sampler = prefetcher.wrap(_Slow(), _Order())
    loader = DataLoader(dataset, sampler=sampler, batch_size=None)
    for i, _ in enumerate(loader):
        if i == 2:
            break
    assert [int(b[0]) for b in loader] == list(range(6))  # a new iteration starts from the first batch
    assert not dataset.pending  # nothing left over from the stopped iteration
    prefetcher.close()
    assert [int(b[0]) for b in loader] == list(range(6))  # a closed prefetcher starts its thread again
    prefetcher.close()


def test_a_failing_batch_raises_in_the_loop_at_its_turn():
    prefetcher = Prefetcher()
    dataset, sampler = prefetcher.wrap(_Slow(fail_on=3), _Order())
    seen = []
    with pytest.raises(ValueError, match="bad day 3"):
        for batch in DataLoader(dataset, sampler=sampler, batch_size=None):
            seen.append(int(batch[0]))
    assert seen == [0, 1, 2]
    prefetcher.close()


def test_prefetch_thread_setting_is_checked(make_cfg):
    with pytest.raises(ValueError, match="train.batch.prefetch_thread"):
        _dm(make_cfg(**{"train.batch.prefetch_thread": "sometimes"}))


def test_graph_builder_serves_two_threads_and_pickles_without_its_lock():
    rng = np.random.default_rng(0)
    returns = rng.normal(size=(40, 30))
    valid = rng.random((40, 30)) > 0.1
    builder = DayGraphBuilder(returns, valid, window=10, k=3)
    reference = {d: DayGraphBuilder(returns, valid, window=10, k=3).day_edges(d) for d in range(10, 40)}
    results = {}

    def visit(name, days):
        results[name] = {d: builder.day_edges(d) for d in days}

    threads = [threading.Thread(target=visit, args=(n, list(range(10, 40))[::s])) for n, s in (("a", 1), ("b", -1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("a", "b"):
        for d, edges in results[name].items():
            assert all(np.array_equal(x, y) for x, y in zip(edges, reference[d]))
    assert len(builder._cache) == 30
    copy = pickle.loads(pickle.dumps(builder))
    assert all(np.array_equal(x, y) for x, y in zip(copy.day_edges(20), reference[20]))
    prefetcher = pickle.loads(pickle.dumps(Prefetcher()))
    dataset, sampler = prefetcher.wrap(_Slow(), _Order(3))
    assert [int(b[0]) for b in DataLoader(dataset, sampler=sampler, batch_size=None)] == [0, 1, 2]
    prefetcher.close()


def test_predictions_with_and_without_the_thread_agree(make_cfg):
    from atft.evaluation.inference import predict_days
    from atft.training.module import ATFTLightningModule

    cfg = make_cfg()
    dm = _dm(cfg)
    torch.manual_seed(0)
    module = ATFTLightningModule(cfg, len(dm.panel.feature_names), dm.panel.horizons)
    days = dm.panel.splits.val
    with_thread = predict_days(module, dm.panel, days)
    module.cfg.train.batch.prefetch_thread = False
    without = predict_days(module, dm.panel, days)
    assert np.isfinite(with_thread.pred[days]).any()
    assert np.array_equal(with_thread.pred, without.pred, equal_nan=True)


def test_sampler_len_passes_through():
    sampler = DayBatchSampler(np.arange(20), np.full(20, 5), 10)
    _, wrapped = Prefetcher().wrap(_Slow(), sampler)
    assert len(wrapped) == len(sampler) == 10
