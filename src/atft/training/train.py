"""``train(cfg)``: panel -> Lightning fit -> the test split evaluated once with the best checkpoint.

Run folder (``cfg.run_dir``, default ``runs/<timestamp>``)::

    config.yaml                resolved config (env switches included)
    data.json                  features, horizons, split dates, scaler statistics, graph-return source
    metrics.jsonl              one record per epoch (train/val loss, val metrics per horizon, resets)
    grad_norms.jsonl           gradient-monitor records (when the monitor or encoder hooks are on)
    tensorboard/               TensorBoard event files (train/*, val/*, grad_norm/*)
    checkpoints/best.ckpt      best by cfg.train.checkpoint.monitor (default val/rank_ic, max)
    checkpoints/last.ckpt      latest epoch (both written atomically: temp file then rename)
    metrics.json               {"val": {...}, "test": {"1d": {...}, ...}, "info": {...}}
    predictions_test.parquet   Code, Date, pred_{h}d, target_{h}d
    feature_importance.json    mean variable-selection weight of each feature on the test split

The log goes to ``<train.log_dir>/<run_name>.log`` (default ``_logs/training/<run dir name>.log``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import polars as pl_df
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from atft.config import save_config
from atft.data.panel import Panel, load_panel
from atft.evaluation.metrics import evaluate_predictions
from atft.io_utils import clean_json, write_json, write_parquet
from atft.training.datamodule import PanelDataModule
from atft.training.degeneracy import DegeneracyGuard
from atft.training.grad_monitor import GradientMonitor
from atft.training.module import ATFTLightningModule, dense_predictions
from atft.training.run_logging import EpochSummary, setup_run_logging, teardown_run_logging

log = logging.getLogger("atft.training")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to ``<name>.tmp`` and renamed, so a crash never leaves a torn file."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)))


def resolve_run_dir(cfg) -> Path:
    """``cfg.run_dir`` or ``runs/<timestamp>``; DDP worker processes reuse the launcher's folder."""
    if cfg.get("run_dir"):
        return Path(cfg.run_dir)
    inherited = os.environ.get("ATFT_RUN_DIR")
    if inherited and _rank() > 0:
        return Path(inherited)
    path = Path("runs") / datetime.now().strftime("%Y%m%d_%H%M%S")
    os.environ["ATFT_RUN_DIR"] = str(path)  # Lightning's DDP launcher copies the environment to workers
    return path


def build_callbacks(cfg, run_dir: Path, extra_callbacks=()) -> tuple[list[pl.Callback], ModelCheckpoint,
                                                                    DegeneracyGuard | None]:
    """Checkpoint, epoch summary, degeneracy guard, gradient monitor; ``extra_callbacks`` (e.g. a pruner) last."""
    ck = cfg.train.checkpoint
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=ck.monitor,
                                 mode=ck.mode, save_top_k=1, save_last=True, auto_insert_metric_name=False,
                                 enable_version_counter=False)
    callbacks: list[pl.Callback] = [checkpoint, EpochSummary(run_dir / "metrics.jsonl")]
    guard = DegeneracyGuard.from_config(cfg) if cfg.train.degeneracy.enabled else None
    if guard is not None:
        callbacks.append(guard)
    mon = cfg.train.monitor
    if mon.grad_monitor.enabled or mon.encoder_grad_hooks:
        callbacks.append(GradientMonitor(mon.grad_monitor.every, mon.grad_monitor.warn_norm,
                                         module_norms=bool(mon.grad_monitor.enabled),
                                         encoder_hooks=bool(mon.encoder_grad_hooks),
                                         jsonl_path=run_dir / "grad_norms.jsonl"))
    return callbacks + list(extra_callbacks), checkpoint, guard


def build_trainer(cfg, run_dir: Path, callbacks: list[pl.Callback], n_batches: int) -> pl.Trainer:
    t = cfg.train.trainer
    progress = t.enable_progress_bar
    if progress is None:
        progress = sys.stderr.isatty()  # a progress bar in a log file is noise
    return pl.Trainer(
        max_epochs=int(t.max_epochs), accelerator=t.accelerator, devices=t.devices, strategy=t.strategy,
        precision=str(t.precision), gradient_clip_val=t.gradient_clip_val, deterministic=bool(t.deterministic),
        logger=TensorBoardLogger(str(run_dir), name="tensorboard", version=""), callbacks=callbacks,
        enable_progress_bar=bool(progress), enable_model_summary=False, num_sanity_val_steps=0,
        use_distributed_sampler=False, default_root_dir=str(run_dir), plugins=[AtomicCheckpointIO()],
        log_every_n_steps=max(1, min(50, n_batches)))


def data_record(panel: Panel) -> dict:
    return {"source": panel.source, "features": panel.feature_names, "horizons": panel.horizons,
            "shape": {"days": int(panel.X.shape[0]), "stocks": int(panel.X.shape[1]),
                      "features": int(panel.X.shape[2])},
            "splits": panel.splits.describe(panel.dates), "notes": panel.notes,
            "scaler": panel.scaler.to_dict(panel.feature_names)}


def _split_metrics(module, dm: PanelDataModule, split: str, cost_bps: float) -> tuple[dict, dict]:
    loader = dm.loader(split, False, int(dm.cfg.train.batch.val_batch_size), shard=False)
    out = module.predict_loader(loader, complete=dm.complete_batch)
    dense = dense_predictions(out["date_idx"], out["stock_idx"], out["pred"], out["y"], out["y_mask"])
    metrics = evaluate_predictions(dense["pred"], dense["target"], dense["mask"], module.horizons, None,
                                   cost_bps, valid=dense["valid"])
    return metrics, out


def write_test_outputs(run_dir: Path, panel: Panel, horizons: list[int], out: dict) -> None:
    """``predictions_test.parquet`` and ``feature_importance.json`` from the test predictions."""
    cols = {"Code": panel.codes[out["stock_idx"]].tolist(), "Date": panel.dates[out["date_idx"]]}
    for k, h in enumerate(horizons):
        cols[f"pred_{h}d"] = out["pred"][:, k].astype(np.float32)
    for k, h in enumerate(horizons):
        cols[f"target_{h}d"] = np.where(out["y_mask"][:, k], out["y"][:, k], np.nan).astype(np.float32)
    frame = pl_df.DataFrame(cols).with_columns(pl_df.col("Date").cast(pl_df.Date))
    frame = frame.with_columns(pl_df.col(f"target_{h}d").fill_nan(None) for h in horizons)
    write_parquet(frame.sort("Date", "Code"), run_dir / "predictions_test.parquet")
    weights = out["feature_weights"].mean(0)  # [F]
    order = np.argsort(-weights)
    importance = {"split": "test", "samples": int(len(out["pred"])), "method": "mean variable-selection weight",
                  "features": {panel.feature_names[i]: float(weights[i]) for i in order}}
    write_json(run_dir / "feature_importance.json", importance)


def evaluate_best(module, dm: PanelDataModule, checkpoint: ModelCheckpoint, run_dir: Path, guard,
                  score_test: bool = True) -> dict:
    """Load the best checkpoint (else the last), score validation and the test split once, write outputs.

    With ``score_test=False`` (hyper-parameter search) only validation is scored: ``"test"`` is None.
    """
    best = checkpoint.best_model_path or checkpoint.last_model_path
    if best and Path(best).is_file():
        state = torch.load(best, map_location=module.device, weights_only=False)["state_dict"]
        module.load_state_dict(state)
    cost = float(module.cfg.train.eval.cost_bps)
    val_metrics, _ = _split_metrics(module, dm, "val", cost)
    test_metrics = None
    if score_test:
        test_metrics, out = _split_metrics(module, dm, "test", cost)
        write_test_outputs(run_dir, dm.panel, module.horizons, out)
    info = {"checkpoint": str(best), "best_score": float(checkpoint.best_model_score)
            if checkpoint.best_model_score is not None else None, "monitor": checkpoint.monitor,
            "primary_horizon": module.primary_horizon, "cost_bps": cost,
            "splits": dm.panel.splits.describe(dm.panel.dates),
            "degeneracy_stop": guard.stopped_message if guard is not None else None}
    result = clean_json({"val": val_metrics, "test": test_metrics, "info": info})
    write_json(run_dir / "metrics.json", result)
    h = f"{module.primary_horizon}d"
    if test_metrics is None:
        v = val_metrics[h]
        log.info("Validation (best checkpoint, %s, %d days): RankIC %.4f; test split not scored", h, v["days"],
                 v["rank_ic"])
        return result
    t = test_metrics[h]
    log.info("Test (best checkpoint, %s, %d days, cost %.1f bps): IC %.4f | RankIC %.4f | ICIR %.3f | "
             "Sharpe %.2f | Sharpe net %.2f", h, t["days"], cost, t["ic"], t["rank_ic"], t["icir"], t["sharpe"],
             t["sharpe_net"])
    return result


def dry_run(module: ATFTLightningModule, dm: PanelDataModule) -> dict:
    """One training batch forward and backward, no run folder: checks data, model and loss fit together."""
    batch = dm.complete_batch(next(iter(dm.loader("train", False, int(dm.cfg.train.batch.train_batch_size),
                                                  shard=False))))
    terms = module.loss_terms(module(batch), batch)
    terms["loss"].backward()
    log.info("dry run: batch x %s, %d edges, loss %.4f; no training done", tuple(batch["x"].shape),
             batch["edge_index"].shape[1], float(terms["loss"].detach()))
    return {"dry_run": True, "loss": float(terms["loss"].detach()), "batch_shape": list(batch["x"].shape)}


def train(cfg, resume_from: str | None = None, dry_run_only: bool = False, extra_callbacks=(),
          score_test: bool = True) -> dict:
    """Train on ``cfg.data.path``; returns the content of ``metrics.json`` (``{}`` on DDP worker ranks).

    Args:
        extra_callbacks: Lightning callbacks added after the built-in ones (``atft tune``'s pruner).
        score_test: False seals the test split: its loader raises, nothing on it is scored or written.
    """
    run_dir = resolve_run_dir(cfg)
    cfg.run_dir = str(run_dir)
    cfg.run_name = cfg.get("run_name") or run_dir.name
    log_file = Path(cfg.train.get("log_dir") or "_logs/training") / f"{cfg.run_name}.log"
    handlers = setup_run_logging(log_file if _rank() == 0 and not dry_run_only else None, console=_rank() == 0)
    try:
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
        panel = load_panel(cfg.data.path, cfg.data, model_cfg=cfg.model)
        log.info("run %s: %s", cfg.run_name, json.dumps(panel.splits.describe(panel.dates)))
        module = ATFTLightningModule(cfg, len(panel.feature_names), panel.horizons)
        dm = PanelDataModule(cfg, panel, sealed=() if score_test else ("test",))
        dm.setup("fit")
        if dry_run_only:
            return dry_run(module, dm)
        if _rank() == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / "config.yaml")
            write_json(run_dir / "data.json", data_record(panel))
            log.info("log file %s, run folder %s", log_file, run_dir)
        callbacks, checkpoint, guard = build_callbacks(cfg, run_dir, extra_callbacks)
        trainer = build_trainer(cfg, run_dir, callbacks, len(dm.train_dataloader()))
        trainer.fit(module, datamodule=dm, ckpt_path=resume_from)
        if guard is not None and guard.stopped_message:
            log.error("training stopped early by the degeneracy guard; evaluating the best checkpoint so far")
        if not trainer.is_global_zero:
            return {}
        return evaluate_best(module, dm, checkpoint, run_dir, guard, score_test=score_test)
    finally:
        teardown_run_logging(handlers)
