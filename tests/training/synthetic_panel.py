"""A tiny ML dataset that follows DESIGN.md's data contract, and overrides for seconds-long CPU runs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import polars as pl


def write_dataset(path: Path, n_stocks: int = 12, n_days: int = 70, horizons=(1, 5), seed: int = 0,
                  signal: float = 0.5) -> Path:
    """Prices driven by a planted feature ``sig``: the return from t to t+1 is ``0.01 (signal * sig_t + e)``.

    Columns: Code, Date, returns_1d, sig, noise_a, noise_b (cross-sectionally z-scored per date),
    target_{h}d (null where t+h is beyond the data), Sector, Market, and ``target_1d_binary`` (which must
    never become a feature).
    """
    rng = np.random.default_rng(seed)
    sig = rng.standard_normal((n_days, n_stocks))  # [D, N]
    step = 0.01 * (signal * sig + rng.standard_normal((n_days, n_stocks)))  # return t -> t+1
    close = 100 * np.cumprod(np.vstack([np.ones((1, n_stocks)), 1 + step[:-1]]), axis=0)  # [D, N]
    ret1 = np.vstack([np.full((1, n_stocks), np.nan), close[1:] / close[:-1] - 1])  # [D, N]

    def zscore(a):  # per date across stocks; the first day of returns_1d is all-NaN and stays so
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return (a - np.nanmean(a, 1, keepdims=True)) / np.nanstd(a, 1, keepdims=True)

    dates = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-01-01") + n_days)
    cols = {
        "Code": np.tile([f"S{i:03d}" for i in range(n_stocks)], n_days),
        "Date": np.repeat(dates, n_stocks),
        "returns_1d": zscore(ret1).ravel(),
        "sig": zscore(sig).ravel(),
        "noise_a": rng.standard_normal(n_days * n_stocks),
        "noise_b": rng.standard_normal(n_days * n_stocks),
    }
    for h in horizons:
        tgt = np.full((n_days, n_stocks), np.nan)
        tgt[: n_days - h] = close[h:] / close[:-h] - 1
        cols[f"target_{h}d"] = tgt.ravel()
    cols["target_1d_binary"] = (np.nan_to_num(cols[f"target_{horizons[0]}d"]) > 0).astype(np.float32)
    frame = pl.DataFrame(cols).with_columns(
        pl.col("Date").cast(pl.Date),
        pl.col(pl.Float64).cast(pl.Float32).fill_nan(None),
        Sector=pl.col("Code").str.slice(-1).cast(pl.Int32).mod(3).cast(pl.Utf8).map_elements(
            lambda s: f"sec{s}", return_dtype=pl.Utf8),
        Market=pl.lit("Prime"),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return path


def fast_overrides(data_path: Path, run_dir: Path, **extra) -> list[str]:
    """Overrides for a seconds-long CPU run on the tiny dataset."""
    base = {
        "data.path": str(data_path), "run_dir": str(run_dir), "train.log_dir": str(run_dir.parent / "_logs"),
        "data.lookback": 5, "data.split.train_frac": 0.6, "data.split.val_frac": 0.2,
        "model.hidden_size": 16, "model.vsn_embed_dim": 4, "model.temporal.attention_heads": 2,
        "model.gat.heads": 2, "model.gat.layers": 1, "model.graph.window": 10, "model.graph.k": 3,
        "train.batch.train_batch_size": 24, "train.batch.val_batch_size": 48,
        "train.trainer.max_epochs": 1, "train.trainer.accelerator": "cpu", "train.trainer.enable_progress_bar": False,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]
