"""Memory guards of the panel loader: one preallocated ``[D, N, F]`` array, chunked statistics, half precision."""

import tracemalloc

import numpy as np
import polars as pl
import pytest
import torch

from atft.config import load_config
from atft.data import dense
from atft.data.panel import load_panel

D, N, F = 120, 60, 40  # a 1.15 MB float32 panel


def _wide_dataset(path, seed: int = 0):
    """``F`` noise features (one with gaps and an inf), two targets, and the target-derived columns an
    upstream dataset carries (they must never become features)."""
    rng = np.random.default_rng(seed)
    dates = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-01-01") + D)
    cols = {"Code": np.tile([f"S{i:03d}" for i in range(N)], D), "Date": np.repeat(dates, N)}
    for j in range(F):
        cols[f"f{j:02d}"] = rng.standard_normal(D * N).astype(np.float32) * (1 + j)
    cols["f00"][::7] = np.nan
    cols["f01"][3] = np.inf
    for h in (1, 5):
        cols[f"target_{h}d"] = rng.standard_normal(D * N).astype(np.float32) * 0.01
        cols[f"target_{h}d_binary"] = (cols[f"target_{h}d"] > 0).astype(np.float32)
    cols["te_sec_target_5d"] = cols["target_5d"] * 0.5
    frame = pl.DataFrame(cols).with_columns(pl.col("Date").cast(pl.Date))
    frame.sample(fraction=1.0, shuffle=True, seed=seed).write_parquet(path, row_group_size=1000)  # unsorted rows
    return path


def _cfg(path, **extra):
    return load_config([f"data.path={path}", *(f"{k}={v}" for k, v in extra.items())]).data


def _loader_peak(path, cfg) -> tuple[object, int]:
    load_panel(path, cfg)  # first-use imports (pyarrow.parquet, ...) allocate too: not the loader's
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        panel = load_panel(path, cfg)
        return panel, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_loader_peak_allocation_stays_near_the_panel_bytes(tmp_path, monkeypatch):
    path = _wide_dataset(tmp_path / "wide.parquet")
    panel_bytes = D * N * F * 4
    monkeypatch.setattr(dense, "CHUNK_BYTES", panel_bytes // 16)  # chunks small against the panel, as at scale
    panel, peak = _loader_peak(path, _cfg(path))
    assert panel.X.shape == (D, N, F) and panel.X.dtype == np.float32
    assert not any("target" in n for n in panel.feature_names)
    # the old loader held the dense array, its float64 / np.where copies, X[days] copies and the scaler's
    # full-size temporaries at once: 4-6 x the panel
    assert peak <= 2.2 * panel_bytes, f"loader peak {peak / panel_bytes:.2f} x the panel bytes"


def test_half_precision_loader_never_holds_a_float32_panel(tmp_path, monkeypatch):
    path = _wide_dataset(tmp_path / "wide.parquet")
    panel_bytes = D * N * F * 4
    monkeypatch.setattr(dense, "CHUNK_BYTES", panel_bytes // 16)
    panel, peak = _loader_peak(path, _cfg(path, **{"data.panel_dtype": "bfloat16"}))
    assert panel.X.nbytes == panel_bytes // 2
    assert peak <= 1.2 * panel_bytes, f"loader peak {peak / panel_bytes:.2f} x the float32 panel bytes"


def test_chunked_load_matches_a_whole_frame_reference(tmp_path, monkeypatch):
    path = _wide_dataset(tmp_path / "wide.parquet")
    monkeypatch.setattr(dense, "CHUNK_BYTES", 1)  # one column / one day per chunk
    small = load_panel(path, _cfg(path))
    monkeypatch.setattr(dense, "CHUNK_BYTES", 1 << 40)  # everything in one chunk
    monkeypatch.setattr(dense, "BLOCK_BYTES", 7 * 4 * F)  # 7-row blocks: most end inside a 1,000-row group
    blocks = load_panel(path, _cfg(path))
    assert np.array_equal(blocks.X, small.X) and blocks.nonfinite == small.nonfinite
    monkeypatch.setattr(dense, "BLOCK_BYTES", 1 << 40)  # the whole batch as one block
    whole = load_panel(path, _cfg(path))
    assert np.array_equal(small.X, whole.X) and np.array_equal(small.M, whole.M)
    assert np.array_equal(small.Y, whole.Y, equal_nan=True)
    assert small.nonfinite == whole.nonfinite == {"features": {"f00": 1029, "f01": 1}, "targets": {}}
    # against the frame itself: the scaled value of one row
    frame = pl.read_parquet(path).sort("Date", "Code")
    raw = frame.row(5 * N + 7, named=True)
    col = small.feature_names.index("f05")
    expect = np.clip((np.float32(raw["f05"]) - small.scaler.center[col]) / small.scaler.scale[col], -5, 5)
    assert small.X[5, 7, col] == pytest.approx(expect, rel=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_panel_is_the_float32_panel_rounded(tmp_path, dtype):
    path = _wide_dataset(tmp_path / "wide.parquet")
    full = load_panel(path, _cfg(path))
    half = load_panel(path, _cfg(path, **{"data.panel_dtype": dtype}))
    assert half.X.dtype.name == dtype and half.X.nbytes == full.X.nbytes // 2
    rounded = torch.from_numpy(full.X).to(getattr(torch, dtype)).float().numpy()  # torch's round-to-nearest
    assert np.array_equal(half.X.astype(np.float32), rounded)
    eps = {"float16": 2**-11, "bfloat16": 2**-8}[dtype]  # unit roundoff
    assert np.all(np.abs(half.X.astype(np.float32) - full.X) <= eps * np.abs(full.X) + 1e-7)
    assert np.array_equal(half.M, full.M) and np.array_equal(half.Y, full.Y, equal_nan=True)


def test_bad_panel_dtype_is_one_line(tmp_path):
    from atft.errors import InputError

    path = _wide_dataset(tmp_path / "wide.parquet")
    with pytest.raises(InputError, match="data.panel_dtype='int8'"):
        load_panel(path, _cfg(path, **{"data.panel_dtype": "int8"}))


def test_row_order_of_the_file_does_not_change_the_panel(tmp_path, monkeypatch):
    """Date-major complete rows take the loader's plain-copy path, code-major and shuffled rows the scatter."""
    monkeypatch.setattr(dense, "BLOCK_BYTES", 50 * 4 * (F + 3))  # 50-row blocks of the feature read
    shuffled = _wide_dataset(tmp_path / "shuffled.parquet")
    frame = pl.read_parquet(shuffled)
    panels = [load_panel(shuffled, _cfg(shuffled))]
    for name, keys in (("date_major", ["Date", "Code"]), ("code_major", ["Code", "Date"])):
        path = tmp_path / f"{name}.parquet"
        frame.sort(keys).write_parquet(path, row_group_size=500)
        panels.append(load_panel(path, _cfg(path)))
    for other in panels[1:]:
        assert np.array_equal(other.X, panels[0].X) and np.array_equal(other.M, panels[0].M)
        assert np.array_equal(other.Y, panels[0].Y, equal_nan=True)
        assert other.nonfinite == panels[0].nonfinite


def test_leakage_screen_samples_long_training_spans_and_still_refuses_a_leak():
    from atft.data.screen import SCREEN_MAX_DAYS, leakage_screen
    from atft.errors import InputError

    rng = np.random.default_rng(0)
    days, stocks = SCREEN_MAX_DAYS * 3, 30
    Y = rng.standard_normal((days, stocks, 1)).astype(np.float32)
    X = np.concatenate([rng.standard_normal((days, stocks, 1)), Y + 0.1 * rng.standard_normal(Y.shape)], -1)
    X = X.astype(np.float32)
    leakage_screen(X[..., :1], Y, ["noise"], [1], np.arange(days), 0.5)  # no leak: passes
    with pytest.raises(InputError, match="'peek' has mean daily IC"):
        leakage_screen(X, Y, ["noise", "peek"], [1], np.arange(days), 0.5)
