"""Every command block of the seed's QUICK_REFERENCE runs as written (tiny data, --max-epochs 1), and DDP on CPU.

The only additions to the seed's lines are a tiny dataset and model-size overrides so that each run
takes seconds; the environment variables and the seed's own overrides are passed unchanged.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from atft.config import load_config
from atft.data.panel import load_panel
from atft.training.datamodule import PanelDataModule
from atft.training.sampler import DayBatchSampler
from atft.training.train import resolve_run_dir

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "integrated_ml_training_pipeline.py"
TINY = ["data.lookback=5", "model.hidden_size=16", "model.vsn_embed_dim=4", "model.temporal.attention_heads=2",
        "model.gat.heads=2", "model.gat.layers=1", "model.graph.window=10", "model.graph.k=3",
        "train.trainer.accelerator=cpu"]


def _script():
    spec = importlib.util.spec_from_file_location("integrated_ml_training_pipeline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _only_run(cwd: Path) -> Path:
    runs = list((cwd / "runs").iterdir())
    assert len(runs) == 1
    return runs[0]


SEED_BLOCKS = {
    "standard": ({"ENABLE_GRAD_MONITOR": "1", "GRAD_MONITOR_EVERY": "500", "DEGENERACY_RESET_SCALE": "0.05",
                  "VARIANCE_PENALTY_WEIGHT": "0.01"},
                 ["train.batch.train_batch_size=2048", "train.batch.num_workers=8",
                  "train.batch.persistent_workers=true", "train.trainer.precision=bf16-mixed"]),
    "full": ({"ENABLE_GRAD_MONITOR": "1", "GRAD_MONITOR_EVERY": "500", "DEGENERACY_RESET_SCALE": "0.05"},
             ["train.batch.train_batch_size=2048", "train.batch.num_workers=8",
              "train.trainer.precision=bf16-mixed"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("block", sorted(SEED_BLOCKS))
def test_seed_production_blocks(block, dataset, tmp_path, monkeypatch):
    environ, overrides = SEED_BLOCKS[block]
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ATFT_RUN_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    argv = ["--data-path", str(dataset), "--max-epochs", "1", *overrides, *TINY]
    assert _script().main(argv) == 0
    run = _only_run(tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["trainer"]["precision"] == "bf16-mixed" and cfg["train"]["batch"]["num_workers"] == 8
    assert cfg["train"]["monitor"]["grad_monitor"]["every"] == 500
    assert cfg["run_name"].startswith("prod_validation_")
    log = next((tmp_path / "_logs" / "training").glob("prod_validation_*.log")).read_text()
    assert "Epoch 1/1 | Train Loss" in log and "[GRAD-MONITOR] step=0 prediction_head: norm=" in log
    assert set(json.loads((run / "metrics.json").read_text())["test"]) == {"1d", "5d"}


def test_seed_encoder_debug_block_as_a_subprocess(dataset, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ATFT_RUN_DIR"}
    env.update({"ENABLE_ENCODER_GRAD_HOOKS": "1", "ENABLE_GRAD_MONITOR": "1", "GRAD_MONITOR_EVERY": "200",
                "GRAD_MONITOR_WARN_NORM": "1e-7", "DEGENERACY_RESET_SCALE": "0.05", "OMP_NUM_THREADS": "1"})
    cmd = [sys.executable, str(SCRIPT), "--data-path", str(dataset), "--max-epochs", "1", *TINY]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    logs = list((tmp_path / "_logs" / "training").glob("prod_validation_*.log"))
    grep = subprocess.run(["grep", "ENCODER-GRAD", *map(str, logs)], capture_output=True, text=True).stdout
    assert "projected_features: grad_norm=" in grep and "normalized_features: grad_norm=" in grep
    count = subprocess.run(["grep", "-c", "DEGENERACY-GUARD.*reset applied", *map(str, logs)],
                           capture_output=True, text=True).stdout.strip()
    assert count == "0"
    assert "Epoch 1/1" in proc.stdout  # the console gets the log lines too


def test_script_flags_and_bad_input(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    script = _script()
    args = script.build_parser().parse_args(["--batch-size", "64", "--lr", "0.01", "a.b=1"])
    overrides = script.to_overrides(args)
    assert overrides[:2] == ["train.batch.train_batch_size=64", "train.optimizer.lr=0.01"]
    assert overrides[-1] == "a.b=1" and any(o.startswith("run_name=prod_validation_") for o in overrides)
    assert script.main(["--data-path", str(tmp_path / "missing.parquet"), "--dry-run"]) == 2
    assert "missing.parquet does not exist" in capsys.readouterr().err
    assert script.main(["--data-path", str(dataset), "--dry-run", *TINY]) == 0
    assert not (tmp_path / "runs").exists()


def test_ddp_workers_share_the_launchers_run_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("ATFT_RUN_DIR", raising=False)
    from omegaconf import OmegaConf

    launcher = resolve_run_dir(OmegaConf.create({"run_dir": None}))
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_run_dir(OmegaConf.create({"run_dir": None})) == launcher


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_one_epoch(dataset, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ATFT_RUN_DIR", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")})
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "atft.cli", "train", "--data-path", str(dataset), "--max-epochs", "1",
           "--run-dir", str(run), *TINY, "train.trainer.devices=2", "train.trainer.strategy=ddp",
           f"train.log_dir={tmp_path / '_logs'}", "train.batch.train_batch_size=24"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1  # rank 0 writes once
    cfg = load_config([f"data.path={dataset}", *TINY, "train.batch.train_batch_size=24"], environ={})
    dm = PanelDataModule(cfg, load_panel(dataset, cfg.data, model_cfg=cfg.model))
    dm.setup("fit")
    days = dm.panel.splits.train
    usable = dm.usable("train")[days].sum(1)
    single = len(DayBatchSampler(days, usable, 24))
    per_rank = len(DayBatchSampler(days, usable, 24, rank=1, world_size=2))
    assert records[0]["step"] == per_rank == single // 2  # each rank stepped through its half of the days
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "metrics.json").is_file()
    log = (tmp_path / "_logs" / "ddp.log").read_text()
    assert log.count("Epoch 1/1 |") == 1


def _background_reads(monkeypatch) -> list[str]:
    """The threads that read a dataset file (``read_panel_file``) from now on."""
    import threading

    from atft.data import panel as panel_mod

    threads: list[str] = []
    real = panel_mod.read_panel_file

    def read(path, data_cfg):
        threads.append(threading.current_thread().name)
        return real(path, data_cfg)

    monkeypatch.setattr(panel_mod, "read_panel_file", read)
    return threads


def test_seed_command_and_atft_train_read_the_dataset_once_while_importing(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    threads = _background_reads(monkeypatch)
    assert _script().main(["--data-path", str(dataset), "--dry-run", *TINY]) == 0
    assert threads == ["atft-prefetch"]  # read in the background, taken by the run's load_panel
    import atft.training.train as train_mod
    from atft import cli

    shapes = []
    monkeypatch.setattr(train_mod, "train", lambda cfg, **_: shapes.append(load_panel(cfg.data.path, cfg.data).X.shape))
    assert cli.main(["train", "--data-path", str(dataset), *TINY]) == 0
    assert threads == ["atft-prefetch"] * 2 and len(shapes) == 1
