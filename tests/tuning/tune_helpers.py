"""Helpers of the ``atft tune`` tests: tiny settings, a small space, the CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
