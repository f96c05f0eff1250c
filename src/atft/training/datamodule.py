"""Panel -> day batches for the LightningModule (batch contract in docs/architecture.md).

Windows ``X[d-T+1 : d+1, n]`` are gathered by index from the panel tensor at batch time; no array of
windows is ever built, and no padded copy of the panel: history positions before the first day are
clamped to day 0 when gathering and then zeroed and masked, so early days see an empty history instead
of wrapping around. A half-precision panel (``data.panel_dtype``) is cast to float32 per batch.

Where the windows are gathered:
- CPU (default): where the DataLoader builds batches, so they arrive complete: with ``num_workers=0``
  (the default) on one background thread that builds the next batch while a step runs
  (``train.batch.prefetch_thread``, ``atft.training.prefetch``), else in the worker processes.
- GPU with ``train.batch.panel_on_device`` (``auto``: a GPU and ``num_workers=0``): workers send only
  indices and graphs; the padded panel lives on the device and ``on_after_batch_transfer`` gathers
  there, which avoids copying ``[B, T, F]`` windows host-to-device every step.
"""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from atft.config import cfg_get
from atft.data.panel import Panel, load_panel
from atft.training.prefetch import Prefetcher
from atft.training.sampler import DayBatchSampler
from atft.training.targets import cross_sectional_targets

log = logging.getLogger("atft.training")


class PanelWindows:
    """Index-gathered windows and targets of a :class:`Panel` as torch tensors.

    Args:
        panel: the loaded panel.
        lookback: ``T`` days per window.
        min_history_frac: a sample needs ``ceil(frac * T)`` valid days in its window (default 0.5).
        target_norm: the cross-sectional training target (``atft.training.targets``, default zscore).
        winsorize_sigma: its clip (default 3).
    """

    def __init__(self, panel: Panel, lookback: int, min_history_frac: float = 0.5, target_norm: str = "zscore",
                 winsorize_sigma: float = 3.0):
        N = panel.X.shape[1]
        self.T = int(lookback)
        self.x = panel_tensor(panel.X)  # [D, N, F] shares panel.X's memory
        self.valid = torch.from_numpy(panel.M)  # [D, N] step mask for the model
        csum = np.concatenate([np.zeros((1, N), np.int64), np.cumsum(panel.M, 0)])  # [D+1, N]
        first = np.maximum(np.arange(1, len(csum)) - self.T, 0)  # [D] row of csum before each window
        history = csum[1:] - csum[first]  # [D, N] valid days in each window
        need = int(np.ceil(float(min_history_frac) * self.T))
        self.sample_ok = panel.M & (history >= max(need, 1))  # [D, N]
        self.y = torch.from_numpy(np.nan_to_num(panel.Y, nan=0.0))  # [D, N, H]
        self.y_mask = torch.from_numpy(panel.Y_mask)  # [D, N, H]
        # per-day normalised targets for the loss; metrics keep the raw y
        self.y_norm = torch.from_numpy(cross_sectional_targets(
            panel.Y, panel.Y_mask, target_norm, winsorize_sigma, scale_days=panel.splits.train))  # [D, N, H]
        self.offsets = torch.arange(1 - self.T, 1)  # [T] day offsets -T+1 .. 0

    def to(self, device) -> PanelWindows:
        self.x, self.valid, self.offsets = self.x.to(device), self.valid.to(device), self.offsets.to(device)
        return self

    def gather(self, date_idx: torch.Tensor, stock_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows of the samples: step ``t`` is day ``d - T + 1 + t`` (before day 0: zeros, masked).

        Returns float32 ``x [B, T, F]`` and the step mask ``x_mask [B, T]`` (True where the day's row is valid).
        """
        days = date_idx.to(self.x.device)[:, None] + self.offsets[None, :]  # [B, T]
        before = days < 0  # [B, T] history before the panel's first day
        rows = days.clamp(min=0)
        cols = stock_idx.to(self.x.device)[:, None]  # [B, 1]
        x = self.x[rows, cols].float().masked_fill_(before[..., None], 0.0)  # [B, T, F]
        return x, self.valid[rows, cols] & ~before  # [B, T, F], [B, T]


def panel_tensor(X: np.ndarray) -> torch.Tensor:
    """``X`` as a torch tensor sharing its memory (bfloat16 from ml_dtypes is viewed through its bits)."""
    if X.dtype.name == "bfloat16":
        return torch.from_numpy(X.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(X)


class DayBatchDataset(Dataset):
    """Map-style dataset whose index is a list of day indices (one batch); returns the batch dict.

    Args:
        windows: the gatherer.
        usable: ``[D, N]`` bool, the samples of this split (e.g. with at least one target when training).
        graph_builder: ``DayGraphBuilder`` or None (no edges).
        gather: gather windows here (False: leave ``x`` to ``on_after_batch_transfer``).
    """

    def __init__(self, windows: PanelWindows, usable: np.ndarray, graph_builder=None, gather: bool = True):
        self.windows, self.usable, self.graph_builder, self.gather = windows, usable, graph_builder, gather

    def __len__(self) -> int:
        return self.usable.shape[0]

    def _graph(self, d: int, stocks: np.ndarray, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.graph_builder is None:
            return torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 3)
        edge_index, edge_attr = self.graph_builder.graph(d, stocks)
        return torch.as_tensor(edge_index, dtype=torch.long) + offset, torch.as_tensor(edge_attr).float()

    def __getitem__(self, days: list[int]) -> dict[str, torch.Tensor]:
        date_idx, stock_idx, day, edges, attrs = [], [], [], [], []
        offset = 0
        for j, d in enumerate(sorted(int(d) for d in days)):
            stocks = np.flatnonzero(self.usable[d])  # [n_d]
            ei, ea = self._graph(d, stocks, offset)  # day graph, shifted into the batch's node range
            edges.append(ei)
            attrs.append(ea)
            date_idx.append(np.full(len(stocks), d))
            stock_idx.append(stocks)
            day.append(np.full(len(stocks), j))
            offset += len(stocks)
        date_t = torch.from_numpy(np.concatenate(date_idx)).long()  # [B]
        stock_t = torch.from_numpy(np.concatenate(stock_idx)).long()  # [B]
        batch = {"date_idx": date_t, "stock_idx": stock_t, "day": torch.from_numpy(np.concatenate(day)).long(),
                 "y": self.windows.y[date_t, stock_t], "y_mask": self.windows.y_mask[date_t, stock_t],
                 "y_norm": self.windows.y_norm[date_t, stock_t],
                 "edge_index": torch.cat(edges, 1), "edge_attr": torch.cat(attrs, 0)}
        if self.gather:
            batch["x"], batch["x_mask"] = self.windows.gather(date_t, stock_t)  # [B, T, F], [B, T]
        return batch


def _min_periods(graph_cfg) -> int | None:
    """``model.graph.min_periods`` capped at the window (null: the builder's default, W // 2)."""
    value = cfg_get(graph_cfg, "min_periods")
    return None if value is None else min(int(value), int(graph_cfg.window))


def build_graph_builder(panel: Panel, model_cfg):
    """The day-graph builder of the panel, or None when the GAT is off or no returns exist."""
    if not model_cfg.gat.enabled:
        return None
    if panel.returns is None:
        log.warning("no daily returns in the dataset: the GAT runs without edges")
        return None
    from atft.graph.day_graph import DayGraphBuilder

    valid = panel.M & np.isfinite(panel.returns)  # [D, N]
    # cache every day the loaders visit (train, validation and test days; ~0.3-0.6 MB per 4,000-stock day):
    # with shuffled days an LRU smaller than that would rebuild a correlation matrix and top-k inside the
    # training step on most misses, and a larger one would only hold embargo days no loader asks for
    splits = getattr(panel, "splits", None)
    visited = len(panel.dates) if splits is None else sum(len(getattr(splits, s)) for s in ("train", "val", "test"))
    return DayGraphBuilder(panel.returns, valid, panel.sector_id, panel.market_id,
                           window=int(model_cfg.graph.window), k=int(model_cfg.graph.k),
                           min_periods=_min_periods(model_cfg.graph),
                           cache_days=max(1, visited),
                           residual=str(cfg_get(model_cfg.graph, "residual", "none")))  # runs before the knob: none


class PanelDataModule(pl.LightningDataModule):
    """Train / validation / test day batches of one panel (``cfg.data``, ``cfg.train.batch``).

    Args:
        cfg: the full resolved config.
        panel: an already loaded panel (None -> ``load_panel(cfg.data.path, cfg.data)`` in ``setup``).
        sealed: splits whose loader raises (``("test",)`` during a hyper-parameter search).

    ``access_log`` lists the split of every loader built, in order (the search's no-test-days check).
    """

    def __init__(self, cfg, panel: Panel | None = None, sealed=()):
        super().__init__()
        self.cfg, self.panel = cfg, panel
        self.sealed = frozenset(sealed)
        self.access_log: list[str] = []
        self.windows: PanelWindows | None = None
        self.graph_builder = None
        b = cfg.train.batch
        self.num_workers = int(b.num_workers)
        self.persistent_workers = bool(b.persistent_workers)
        if self.num_workers == 0 and self.persistent_workers:
            # torch's DataLoader raises on persistent workers without workers; honour the rest of the run
            log.info("train.batch.persistent_workers=true ignored: it needs num_workers > 0")
            self.persistent_workers = False
        ahead = b.get("prefetch_thread", "auto")
        if ahead not in ("auto", True, False):
            raise ValueError(f"train.batch.prefetch_thread={ahead!r}: expected auto, true or false")
        # auto: without worker processes, one thread builds the next batch while a step runs
        self.prefetcher = Prefetcher() if self.num_workers == 0 and ahead in ("auto", True) else None
        if ahead is True and self.num_workers > 0:
            log.info("train.batch.prefetch_thread=true ignored: the %d DataLoader workers build batches ahead",
                     self.num_workers)

    def setup(self, stage: str | None = None) -> None:
        if self.windows is not None:
            return
        if self.panel is None:
            self.panel = load_panel(self.cfg.data.path, self.cfg.data, model_cfg=self.cfg.model)
        loss = self.cfg.train.loss
        self.windows = PanelWindows(self.panel, self.cfg.data.lookback, self.cfg.data.min_history_frac,
                                    str(loss.target_norm), float(loss.winsorize_sigma))
        self.graph_builder = build_graph_builder(self.panel, self.cfg.model)

    def panel_on_device(self) -> bool:
        """Whether windows are gathered on the GPU (decided per loader: the trainer may attach later)."""
        wanted = self.cfg.train.batch.get("panel_on_device", "auto")
        gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        if wanted == "auto":
            return gpu and self.num_workers == 0
        return bool(wanted) and gpu

    def usable(self, split: str) -> np.ndarray:
        """``[D, N]`` samples of ``split``: valid history on a day of that split (training: a target too)."""
        days = getattr(self.panel.splits, split)
        out = np.zeros_like(self.windows.sample_ok)
        out[days] = self.windows.sample_ok[days]
        if split == "train":
            out &= self.panel.Y_mask.any(-1)
        return out

    def _rank(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def loader(self, split: str, shuffle: bool, batch_size: int, shard: bool) -> DataLoader:
        if split in self.sealed:
            raise RuntimeError(f"the {split} split is sealed for this run (hyper-parameter search)")
        self.access_log.append(split)
        usable = self.usable(split)
        days = getattr(self.panel.splits, split)
        rank, world = self._rank() if shard else (0, 1)
        sampler = DayBatchSampler(days, usable[days].sum(1), batch_size, shuffle=shuffle,
                                  seed=int(self.cfg.seed), rank=rank, world_size=world,
                                  epoch_source=self._current_epoch if shuffle else None)
        dataset = DayBatchDataset(self.windows, usable, self.graph_builder, gather=not self.panel_on_device())
        return self.dataloader(dataset, sampler)

    def dataloader(self, dataset: Dataset, sampler: DayBatchSampler) -> DataLoader:
        """The loader of ``dataset`` in ``sampler``'s batches: worker processes, or the prefetch thread."""
        if self.prefetcher is not None:
            dataset, sampler = self.prefetcher.wrap(dataset, sampler)
        return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=self.num_workers,
                          persistent_workers=self.persistent_workers,
                          pin_memory=self.trainer is not None and self.trainer.strategy.root_device.type == "cuda")

    def teardown(self, stage: str | None = None) -> None:
        """Stops the prefetch thread (a later loader starts it again)."""
        if self.prefetcher is not None:
            self.prefetcher.close()

    def train_dataloader(self) -> DataLoader:
        b = self.cfg.train.batch
        return self.loader("train", bool(b.shuffle_days), int(b.train_batch_size), shard=True)

    def val_dataloader(self) -> DataLoader:
        # every rank validates on all days: metrics need the whole [D, N, H] prediction panel
        return self.loader("val", False, int(self.cfg.train.batch.val_batch_size), shard=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", False, int(self.cfg.train.batch.val_batch_size), shard=False)

    def complete_batch(self, batch: dict) -> dict:
        """Gather ``x`` on the batch's device when the workers left it out (panel on device)."""
        if "x" not in batch:
            device = batch["date_idx"].device
            if self.windows.x.device != device:
                self.windows.to(device)
            batch["x"], batch["x_mask"] = self.windows.gather(batch["date_idx"], batch["stock_idx"])
        return batch

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return self.complete_batch(batch)
