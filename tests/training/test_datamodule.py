"""Day batches: whole days only, no test date in training/validation, windows gathered by index, DDP shards."""

import numpy as np
import torch

from atft.data.panel import load_panel
from atft.training.datamodule import PanelDataModule
from atft.training.sampler import DayBatchSampler


def _dm(cfg):
    dm = PanelDataModule(cfg, load_panel(cfg.data.path, cfg.data, model_cfg=cfg.model))
    dm.setup("fit")
    return dm


def test_batches_hold_whole_days_and_never_a_test_date(make_cfg):
    cfg = make_cfg()
    dm = _dm(cfg)
    splits = dm.panel.splits
    test_days = set(splits.test.tolist())
    for split, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader())):
        usable = dm.usable(split)
        seen = []
        for batch in loader:
            days = batch["date_idx"].numpy()
            assert not test_days & set(days.tolist()), f"test date in a {split} batch"
            assert set(days.tolist()) <= set(getattr(splits, split).tolist())
            for j, d in enumerate(np.unique(days)):
                in_day = batch["day"].numpy() == j
                assert (days[in_day] == d).all()  # `day` enumerates the batch's sorted days
                # whole day: exactly the usable stocks of that day
                assert sorted(batch["stock_idx"].numpy()[in_day].tolist()) == np.flatnonzero(usable[d]).tolist()
            src, dst = batch["edge_index"]
            assert (batch["day"][src] == batch["day"][dst]).all()  # no edge crosses days
            seen.extend(np.unique(days).tolist())
        assert len(seen) == len(set(seen))  # each day once per epoch
        assert sorted(seen) == [d for d in getattr(splits, split).tolist() if usable[d].any()]


def test_windows_are_the_panel_rows_up_to_the_day(make_cfg):
    cfg = make_cfg()
    dm = _dm(cfg)
    T = cfg.data.lookback
    batch = next(iter(dm.train_dataloader()))
    X = dm.panel.X  # [D, N, F]
    for b in range(0, len(batch["date_idx"]), 7):
        d, n = int(batch["date_idx"][b]), int(batch["stock_idx"][b])
        expected = np.zeros((T, X.shape[2]), np.float32)
        lo = max(0, d - T + 1)
        expected[T - (d + 1 - lo):] = X[lo:d + 1, n]
        assert np.array_equal(batch["x"][b].numpy(), expected)
        assert bool(batch["x_mask"][b, -1])  # the sample's own day is valid
    # the on-device path (indices from the workers, gather after transfer) gives the same tensors
    stripped = {k: v for k, v in batch.items() if k not in ("x", "x_mask")}
    done = dm.complete_batch(stripped)
    assert torch.equal(done["x"], batch["x"]) and torch.equal(done["x_mask"], batch["x_mask"])


def test_sampler_order_depends_on_seed_and_epoch_and_shards_evenly():
    days, counts = np.arange(10, 31), np.full(21, 50)
    s = DayBatchSampler(days, counts, batch_size=100, shuffle=True, seed=3)
    assert s.per_batch == 2 and len(s) == 11
    s.set_epoch(0)
    e0 = s.batches()
    s.set_epoch(1)
    assert s.batches() != e0
    s.set_epoch(0)
    assert s.batches() == e0  # a function of (seed, epoch) only
    shards = [DayBatchSampler(days, counts, 100, shuffle=True, seed=3, rank=r, world_size=2) for r in (0, 1)]
    b0, b1 = shards[0].batches(), shards[1].batches()
    assert len(b0) == len(b1) == len(shards[0]) == 5  # equal step counts, the odd batch dropped
    flat0, flat1 = sum(b0, []), sum(b1, [])
    assert not set(flat0) & set(flat1) and set(flat0 + flat1) <= set(days.tolist())
    skip = DayBatchSampler(days, np.where(days % 2 == 0, 50, 0), 100)
    assert all(d % 2 == 0 for batch in skip for d in batch)  # days without usable samples are skipped


def test_persistent_workers_forced_off_without_workers(make_cfg):
    dm = PanelDataModule(make_cfg(**{"train.batch.persistent_workers": True, "train.batch.num_workers": 0}))
    assert dm.persistent_workers is False


def test_graph_cache_holds_every_day_so_shuffled_epochs_never_rebuild(make_cfg):
    from types import SimpleNamespace

    from atft.training.datamodule import build_graph_builder

    cfg = make_cfg()
    n_days, n_stocks = 2600, 3  # a ten-year panel: more days than the builder's default LRU of 1,024
    rng = np.random.default_rng(0)
    panel = SimpleNamespace(returns=rng.normal(size=(n_days, n_stocks)), M=np.ones((n_days, n_stocks), bool),
                            sector_id=np.zeros(n_stocks, int), market_id=np.zeros(n_stocks, int),
                            dates=np.arange(n_days))
    builder = build_graph_builder(panel, cfg.model)
    days = rng.permutation(n_days)
    first = [id(builder.day_edges(int(d))[0]) for d in days]
    assert first == [id(builder.day_edges(int(d))[0]) for d in days]  # a second shuffled epoch: all hits
