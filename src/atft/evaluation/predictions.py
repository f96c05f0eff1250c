"""Prediction files <-> dense arrays.

A predictions file has one row per ``(Code, Date)``: ``pred_{h}d`` for each horizon, optionally
``target_{h}d`` (realised forward returns, used by evaluation and backtests), ``rank_{h}d`` (1 = best
within the day) and quantile columns ``pred_{h}d_q{q}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from atft.errors import InputError
from atft.evaluation.metrics import within_day_ranks
from atft.io_utils import read_parquet

PRED_RE = re.compile(r"^pred_(\d+)d$")


@dataclass
class PredictionArrays:
    """Predictions as dense arrays: ``pred``/``target`` ``[D, N, H]`` (NaN where absent)."""

    dates: np.ndarray  # [D] datetime64[D]
    codes: np.ndarray  # [N] str
    horizons: list[int]
    pred: np.ndarray  # [D, N, H]
    target: np.ndarray  # [D, N, H]

    def target_mask(self) -> np.ndarray:
        return np.isfinite(self.target)  # [D, N, H]

    def daily_returns(self) -> np.ndarray | None:
        """``target_1d`` if present (the return a position formed at t earns), else None. # [D, N]"""
        if 1 in self.horizons and np.isfinite(self.target[..., self.horizons.index(1)]).any():
            return self.target[..., self.horizons.index(1)]
        return None


def read_predictions(path) -> pl.DataFrame:
    """Read and check a predictions parquet (``Code``, ``Date``, ``pred_{h}d`` columns)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"predictions file {path} does not exist")
    df = read_parquet(path, "predictions file")
    for col in ("Code", "Date"):
        if col not in df.columns:
            raise InputError(f"predictions file {path} has no {col!r} column (expected Code, Date, pred_{{h}}d)")
    if not any(PRED_RE.match(c) for c in df.columns):
        raise InputError(f"predictions file {path} has no pred_{{h}}d column (e.g. pred_1d)")
    return df.with_columns(pl.col("Code").cast(pl.Utf8), pl.col("Date").cast(pl.Date))


def prediction_horizons(df: pl.DataFrame) -> list[int]:
    return sorted(int(m.group(1)) for c in df.columns if (m := PRED_RE.match(c)))


def frame_to_arrays(df: pl.DataFrame, horizons: list[int] | None = None, dates: np.ndarray | None = None,
                    codes: np.ndarray | None = None) -> PredictionArrays:
    """Scatter a predictions frame into dense arrays on its own (or the given) date and code axes."""
    horizons = prediction_horizons(df) if horizons is None else [int(h) for h in horizons]
    if dates is None:
        dates = np.sort(df["Date"].unique().to_numpy()).astype("datetime64[D]")
    if codes is None:
        codes = np.sort(df["Code"].unique().to_numpy().astype(str))
    row_dates = df["Date"].to_numpy().astype("datetime64[D]")
    row_codes = df["Code"].to_numpy().astype(str)
    di, ni = np.searchsorted(dates, row_dates), np.searchsorted(codes, row_codes)
    di_ok, ni_ok = np.minimum(di, len(dates) - 1), np.minimum(ni, len(codes) - 1)
    keep = (dates[di_ok] == row_dates) & (codes[ni_ok] == row_codes)
    shape = (len(dates), len(codes), len(horizons))
    pred, target = np.full(shape, np.nan), np.full(shape, np.nan)  # [D, N, H]
    for k, h in enumerate(horizons):
        for name, arr in ((f"pred_{h}d", pred), (f"target_{h}d", target)):
            if name in df.columns:
                arr[di[keep], ni[keep], k] = df[name].cast(pl.Float64).fill_null(np.nan).to_numpy()[keep]
    return PredictionArrays(dates, codes, horizons, pred, target)


def arrays_to_frame(dates: np.ndarray, codes: np.ndarray, horizons: list[int], pred: np.ndarray,
                    target: np.ndarray | None = None, quantiles: np.ndarray | None = None,
                    quantile_levels: list[float] | None = None) -> pl.DataFrame:
    """Long frame of the finite predictions: ``Code, Date, pred_{h}d, rank_{h}d[, target_{h}d, quantiles]``.

    ``pred``/``target`` ``[D, N, H]``; ``quantiles`` ``[D, N, H, Q]``. Rank 1 is the highest prediction
    of the day (ties share the better rank's average).
    """
    have = np.isfinite(pred).any(-1)  # [D, N]
    di, ni = np.nonzero(have)
    cols: dict[str, object] = {"Code": codes[ni].astype(str), "Date": dates[di].astype("datetime64[D]")}
    for k, h in enumerate(horizons):
        valid = np.isfinite(pred[..., k])
        ranks = within_day_ranks(-pred[..., k], valid)  # [D, N], 1 = best
        cols[f"pred_{h}d"] = pred[di, ni, k].astype(np.float32)
        cols[f"rank_{h}d"] = ranks[di, ni].astype(np.float32)
        if target is not None:
            cols[f"target_{h}d"] = target[di, ni, k].astype(np.float32)
        for q, level in enumerate(quantile_levels or []):
            cols[f"pred_{h}d_q{level:g}"] = quantiles[di, ni, k, q].astype(np.float32)
    df = pl.DataFrame(cols).with_columns(pl.col("Date").cast(pl.Date))
    return df.with_columns(pl.col(c).fill_nan(None) for c in df.columns if c not in ("Code", "Date"))
