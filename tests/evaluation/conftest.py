"""Tiny datasets that follow DESIGN.md's data contract, with a planted cross-sectional signal."""

import numpy as np
import polars as pl
import pytest
import torch


def contract_frame(n_days: int = 90, n_stocks: int = 40, seed: int = 0, strength: float = 0.3) -> pl.DataFrame:
    """Code, Date, z-scored features (returns_1d/5d/20d, f_signal, f_noise), target_1d/5d, Sector, Market.

    ``target_1d`` of day t loads on ``f_signal`` of day t with correlation about ``strength``.
    """
    rng = np.random.default_rng(seed)
    dates = np.datetime64("2023-01-02") + np.arange(n_days)
    signal = rng.normal(size=(n_days, n_stocks))
    ret = 0.01 * (strength * signal + np.sqrt(1 - strength**2) * rng.normal(size=(n_days, n_stocks)))
    close = 100 * np.cumprod(1 + np.vstack([np.zeros((1, n_stocks)), ret[:-1]]), axis=0)  # [D, N]

    def past(h):  # Close(t)/Close(t-h) - 1, NaN before h days of history
        out = np.full_like(close, np.nan)
        out[h:] = close[h:] / close[:-h] - 1
        return out

    def future(h):  # Close(t+h)/Close(t) - 1, NaN where t+h is beyond the data
        out = np.full_like(close, np.nan)
        out[:-h] = close[h:] / close[:-h] - 1
        return out

    cols = {"returns_1d": past(1), "returns_5d": past(5), "returns_20d": past(20), "f_signal": signal,
            "f_noise": rng.normal(size=signal.shape), "target_1d": future(1), "target_5d": future(5)}
    di, ni = np.meshgrid(np.arange(n_days), np.arange(n_stocks), indexing="ij")
    frame = {"Code": [f"{1000 + i}" for i in ni.ravel()], "Date": dates[di.ravel()]}
    frame.update({k: v.ravel().astype(np.float32) for k, v in cols.items()})
    frame["Sector"] = [f"S{i % 4}" for i in ni.ravel()]
    frame["Market"] = [f"M{i % 2}" for i in ni.ravel()]
    df = pl.DataFrame(frame).with_columns(pl.col("Date").cast(pl.Date))
    return df.with_columns(pl.col(c).fill_nan(None) for c in cols)


@pytest.fixture
def contract_dataset(tmp_path):
    path = tmp_path / "tiny.parquet"
    contract_frame().write_parquet(path)
    return path


@pytest.fixture
def one_thread():
    """Tiny matrices: one thread is as fast, and OpenMP threads spinning on a shared CPU are not."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
