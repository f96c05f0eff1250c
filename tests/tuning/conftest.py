"""Tiny synthetic market and settings for seconds-long ``atft tune`` studies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from atft.config import load_config
from atft.data.build import build_dataset

ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.lookback=5", "model.hidden_size=16", "model.vsn_embed_dim=4", "model.temporal.attention_heads=2",
        "model.gat.heads=2", "model.gat.layers=1", "model.graph.window=10", "model.graph.k=3",
        "train.trainer.accelerator=cpu", "train.trainer.max_epochs=2", "train.batch.train_batch_size=256",
        "train.trainer.enable_progress_bar=false"]
SMALL_SPACE = """
search: {startup_trials: 2, pruner: none}
space:
  train.optimizer.lr: {low: 1.0e-3, high: 1.0e-2, log: true}
  model.dropout: {low: 0.0, high: 0.3}
  model.adaptive_norm: {choices: [layernorm, revin]}
  train.loss.type: {choices: [huber, mse]}
"""


@pytest.fixture(scope="session")
def market(tmp_path_factory) -> Path:
    """The synthetic market: 20 stocks x 160 business days, horizons 1 and 5."""
    path = tmp_path_factory.mktemp("market") / "syn.parquet"
    build_dataset(load_config(["data.build.source=synthetic", f"data.build.out={path}", "data.build.stocks=20",
                               "data.build.days=160", "data.build.seed=3", "data.build.horizons=[1,5]"]))
    return path


@pytest.fixture(scope="session")
def planted_market(market) -> Path:
    """The market plus ``planted``: next-day return rank + noise (daily IC ~0.3, below the leakage screen)."""
    path = market.with_name("planted.parquet")
    frame = pl.read_parquet(market)
    noise = np.random.default_rng(0).standard_normal(frame.height)
    rank = frame.select(pl.col("target_1d").rank().over("Date") / pl.len().over("Date") - 0.5).to_series()
    frame.with_columns(planted=pl.Series((rank.fill_null(0.0).to_numpy() * 1.1 + noise).astype(np.float32))
                       ).write_parquet(path)
    return path


def write_space(folder: Path, text: str = SMALL_SPACE, name: str = "space.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def tiny(folder: Path) -> list[str]:
    return [*TINY, f"train.log_dir={folder / 'logs'}"]


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "atft.cli", *args]


def cli_env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    env.pop("ATFT_RUN_DIR", None)
    return env


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=600)
