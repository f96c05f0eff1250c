"""Windows gathered by index without a padded copy of the panel; half-precision panels (``data.panel_dtype``)."""

import numpy as np
import torch
from synthetic_panel import write_dataset

from atft.data.panel import load_panel
from atft.training.datamodule import PanelDataModule, PanelWindows
from atft.training.train import train


def _padded_reference(panel, T: int, date_idx: torch.Tensor, stock_idx: torch.Tensor):
    """The gather this replaced: ``T-1`` zero days in front of a float32 copy of the panel."""
    D, N, F = panel.X.shape
    x = torch.from_numpy(np.concatenate([np.zeros((T - 1, N, F), np.float32), panel.X]))  # [D+T-1, N, F]
    valid = torch.from_numpy(np.concatenate([np.zeros((T - 1, N), bool), panel.M]))  # [D+T-1, N]
    rows = date_idx[:, None] + torch.arange(T)[None, :]  # [B, T]
    return x[rows, stock_idx[:, None]], valid[rows, stock_idx[:, None]]


def _setup(cfg):
    dm = PanelDataModule(cfg, load_panel(cfg.data.path, cfg.data, model_cfg=cfg.model))
    dm.setup("fit")
    return dm


def test_gather_by_index_is_bit_identical_to_the_padded_gather(make_cfg):
    T = 8
    dm = _setup(make_cfg(**{"data.lookback": T}))
    D, N, _ = dm.panel.X.shape
    date_idx, stock_idx = torch.meshgrid(torch.arange(D), torch.arange(N), indexing="ij")  # every sample,
    date_idx, stock_idx = date_idx.reshape(-1), stock_idx.reshape(-1)  # the first T-1 days included
    x, mask = dm.windows.gather(date_idx, stock_idx)
    ref_x, ref_mask = _padded_reference(dm.panel, T, date_idx, stock_idx)
    assert x.dtype == torch.float32 and x.shape == (D * N, T, dm.panel.X.shape[2])
    assert torch.equal(x.view(torch.int32), ref_x.view(torch.int32))  # bit for bit (a -0.0 would differ)
    assert torch.equal(mask, ref_mask)
    assert not mask[:, 0][date_idx < T - 1].any()  # history before day 0 is masked


def test_no_padded_copy_of_the_panel_after_setup(make_cfg):
    T = 6
    dm = _setup(make_cfg(**{"data.lookback": T}))
    D, N, F = dm.panel.X.shape
    arrays = [v for v in vars(dm.windows).values() if isinstance(v, np.ndarray | torch.Tensor)]
    assert not [a for a in arrays if tuple(a.shape) == (D + T - 1, N, F)]
    assert np.shares_memory(dm.windows.x.numpy(), dm.panel.X)  # the windows read panel.X itself
    assert [a for a in arrays if a.ndim == 3 and a.shape[-1] == F] == [dm.windows.x]  # the only [*, N, F] array


def test_half_precision_batches_equal_float32_up_to_rounding(make_cfg):
    full = _setup(make_cfg())
    for dtype, eps in (("float16", 2**-11), ("bfloat16", 2**-8)):
        half = _setup(make_cfg(**{"data.panel_dtype": dtype}))
        assert half.windows.x.dtype == getattr(torch, dtype)
        for a, b in zip(full.train_dataloader(), half.train_dataloader(), strict=True):
            assert b["x"].dtype == torch.float32 and torch.equal(a["x_mask"], b["x_mask"])
            assert torch.equal(b["x"], a["x"].to(getattr(torch, dtype)).float())  # exactly the rounded batch
            assert (b["x"] - a["x"]).abs().le(eps * a["x"].abs()).all()
            assert torch.equal(a["y_norm"], b["y_norm"]) and torch.equal(a["edge_index"], b["edge_index"])


def test_bfloat16_panel_trains_and_validates_like_float32(make_cfg, tmp_path):
    data = write_dataset(tmp_path / "planted.parquet", n_stocks=30, n_days=90, horizons=(1,), signal=0.8)
    scores = {}
    for dtype in ("float32", "bfloat16"):
        cfg = make_cfg(dtype, data_path=data, **{"data.features.leakage_screen_max_abs_ic": 0.99,
                                                  "data.panel_dtype": dtype, "train.trainer.max_epochs": 2})
        scores[dtype] = train(cfg)["val"]["1d"]["rank_ic"]
    # the planted signal is learned either way (a wrong cast - bits read as numbers, a lost scale - gives
    # noise, |RankIC| < 0.15 on these 30 x 12 validation samples); rounding the inputs to 3 significant
    # digits moves RankIC by far less than the gap between 0.3 and noise
    assert scores["float32"] > 0.3
    assert abs(scores["bfloat16"] - scores["float32"]) < 0.1, scores


def test_panel_windows_keep_working_on_a_bare_panel(make_cfg):
    cfg = make_cfg()
    panel = load_panel(cfg.data.path, cfg.data, model_cfg=cfg.model)
    w = PanelWindows(panel, 5, 0.5)
    # a sample needs ceil(0.5 * 5) = 3 valid days in its window
    csum = np.cumsum(panel.M, 0)
    history = csum - np.vstack([np.zeros((5, panel.M.shape[1]), int), csum[:-5]])
    assert np.array_equal(w.sample_ok, panel.M & (history >= 3))
