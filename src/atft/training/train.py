"""``train(cfg)``: panel -> Lightning fit -> the test split evaluated once with the best checkpoint.

Run folder (``cfg.run_dir``, default ``runs/<timestamp>``)::

    config.yaml                resolved config (env switches included)
    data.json                  features, horizons, split dates, scaler statistics, graph-return source
    metrics.jsonl              one record per epoch (train/val loss, val metrics per horizon, resets)
    grad_norms.jsonl           gradient-monitor records (when the monitor or encoder hooks are on)
    tensorboard/               TensorBoard event files (train/*, val/*, grad_norm/*)
    checkpoints/best.ckpt      best by cfg.train.checkpoint.monitor (default val/rank_ic, max), the model
                               before training included (``include_init``: the ridge warm start)
    checkpoints/last.ckpt      latest epoch (both written atomically: temp file then rename)
    metrics.json               {"val": {...}, "test": {"1d": {...}, ...}, "info": {..., "timing": {...}}}
    predictions_test.parquet   Code, Date, pred_{h}d, target_{h}d
    feature_importance.json    mean variable-selection weight of each feature on the test split

The log goes to ``<train.log_dir>/<run_name>.log`` (default ``_logs/training/<run dir name>.log``).

Selection is by validation only: early stopping (``train.early_stopping``) and the best checkpoint watch
``train.checkpoint.monitor``; the test split is scored once, with the selected model. With
``train.ensemble.seeds=K`` the run folder holds K member runs ``seed<k>/`` and the ensemble's averaged
``predictions_test.parquet`` and ``metrics.json`` (``atft.training.ensemble``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from datetime import datetime
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import polars as pl_df
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from atft.checkpoint_io import check_resume, load_checkpoint
from atft.config import save_config
from atft.data.panel import Panel, load_panel
from atft.errors import InputError, RunError
from atft.evaluation.hac import hac_se
from atft.evaluation.metrics import daily_ic, daily_rank_ic, evaluate_predictions, lag_label
from atft.io_utils import clean_json, write_json, write_parquet
from atft.model import LinearPath, PeerPath
from atft.redaction import redact_config
from atft.run_lock import claim_run_dir
from atft.training.allocator import heap_for_training
from atft.training.averaging import SyncFreeEMA
from atft.training.cpu_share import apply_cpu_share
from atft.training.datamodule import PanelDataModule
from atft.training.degeneracy import DegeneracyGuard
from atft.training.grad_monitor import GradientMonitor
from atft.training.linear_init import ridge_fit
from atft.training.module import ATFTLightningModule, dense_predictions
from atft.training.nonfinite import NonFiniteGuard
from atft.training.progress import ProgressLog
from atft.training.run_logging import EpochSummary, setup_run_logging, teardown_run_logging
from atft.training.thread_governor import ThreadGovernor

log = logging.getLogger("atft.training")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to ``<name>.tmp`` and renamed, so a crash never leaves a torn file; read back
    with ``weights_only=True`` (:func:`atft.checkpoint_io.load_checkpoint`)."""

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        """``--resume-from`` goes through the weights-only loader too (``weights_only`` is always True)."""
        return load_checkpoint(path, map_location=map_location)

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


def build_callbacks(cfg, run_dir: Path, extra_callbacks=(), steps_per_epoch: int | None = None
                    ) -> tuple[list[pl.Callback], ModelCheckpoint, DegeneracyGuard | None]:
    """Checkpoint, epoch summary, progress log, early stopping, weight averaging, degeneracy guard, gradient
    monitor; ``extra_callbacks`` last. ``steps_per_epoch`` turns ``train.weight_averaging.ema_epochs`` into a
    per-step decay."""
    ck = cfg.train.checkpoint
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=ck.monitor,
                                 mode=ck.mode, save_top_k=1, auto_insert_metric_name=False,
                                 enable_version_counter=False)
    # last.ckpt is its own callback: Lightning's save_last writes "last" only on epochs that also saved a
    # top-k checkpoint, so after an epoch that did not improve it would still hold the best epoch, and
    # --resume-from last.ckpt would silently go back in time
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                           auto_insert_metric_name=False, enable_version_counter=False)
    callbacks: list[pl.Callback] = [checkpoint, last, EpochSummary(run_dir / "metrics.jsonl"),
                                    ProgressLog.from_config(cfg)]
    stop = cfg.train.get("early_stopping") or {}
    if stop.get("patience"):
        callbacks.append(EarlyStopping(monitor=ck.monitor, mode=ck.mode, patience=int(stop.patience),
                                       min_delta=float(stop.get("min_delta") or 0.0), check_finite=False))
    decay = ema_decay(cfg.train.get("weight_averaging") or {}, steps_per_epoch)
    if decay is not None:
        # validation, checkpoint selection and test scoring see the average; last.ckpt keeps the raw weights too
        log.info("weight averaging: EMA decay %.5f per optimiser step (time constant %.0f steps)", decay,
                 1.0 / (1.0 - decay))
        callbacks.append(SyncFreeEMA(decay))
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


def ema_decay(averaging, steps_per_epoch: int | None) -> float | None:
    """The per-step EMA decay of ``train.weight_averaging``: ``ema_decay`` when given (it wins over
    ``ema_epochs``, which has a default), else ``ema_epochs`` (the average's time constant in epochs) as
    ``1 - 1 / (ema_epochs * steps_per_epoch)``; None when both are null (no averaging). A time constant in
    epochs means the same on a 60-stock and a 4,000-stock panel."""
    decay, epochs = averaging.get("ema_decay"), averaging.get("ema_epochs")
    if decay is not None:
        if not 0.0 < float(decay) < 1.0:
            raise InputError(f"train.weight_averaging.ema_decay={decay} is out of range; expected 0 < decay < 1 "
                             "or null")
        return float(decay)
    if epochs is None:
        return None
    if not float(epochs) > 0:
        raise InputError(f"train.weight_averaging.ema_epochs={epochs} is out of range; expected > 0 or null")
    return 1.0 - 1.0 / max(1.0, float(epochs) * max(1, int(steps_per_epoch or 1)))


def build_strategy(trainer_cfg):
    """``ddp`` gets a bounded collective timeout (``ddp_timeout_s``), so a lost worker ends the run instead
    of leaving the others waiting on it (torch's default is 30 minutes); any other strategy is passed on."""
    if str(trainer_cfg.strategy) != "ddp":
        return trainer_cfg.strategy
    from datetime import timedelta

    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(timeout=timedelta(seconds=float(trainer_cfg.ddp_timeout_s)))


def build_trainer(cfg, run_dir: Path, callbacks: list[pl.Callback], n_batches: int) -> pl.Trainer:
    t = cfg.train.trainer
    progress = t.enable_progress_bar
    if progress is None:
        progress = sys.stderr.isatty()  # a progress bar in a log file is noise
    return pl.Trainer(
        max_epochs=int(t.max_epochs), accelerator=t.accelerator, devices=t.devices, strategy=build_strategy(t),
        precision=str(t.precision), gradient_clip_val=t.gradient_clip_val, deterministic=bool(t.deterministic),
        logger=TensorBoardLogger(str(run_dir), name="tensorboard", version=""), callbacks=callbacks,
        enable_progress_bar=bool(progress), enable_model_summary=False, num_sanity_val_steps=0,
        use_distributed_sampler=False, default_root_dir=str(run_dir), plugins=[AtomicCheckpointIO()],
        log_every_n_steps=max(1, min(50, n_batches)))


def data_record(panel: Panel) -> dict:
    return {"source": panel.source, "features": panel.feature_names, "horizons": panel.horizons,
            "shape": {"days": int(panel.X.shape[0]), "stocks": int(panel.X.shape[1]),
                      "features": int(panel.X.shape[2])},
            "splits": panel.splits.describe(panel.dates), "notes": panel.notes, "nonfinite": panel.nonfinite,
            "scaler": panel.scaler.to_dict(panel.feature_names)}


def _split_predictions(module, dm: PanelDataModule, split: str) -> tuple[dict, dict]:
    """The model's predictions on ``split``: per sample (``predict_loader``) and dense ``[D, N, H]``."""
    loader = dm.loader(split, False, int(dm.cfg.train.batch.val_batch_size), shard=False)
    out = module.predict_loader(loader, complete=dm.complete_batch)
    return out, dense_predictions(out["date_idx"], out["stock_idx"], out["pred"], out["y"], out["y_mask"])


def _split_metrics(module, dm: PanelDataModule, split: str, cost_bps: float) -> tuple[dict, dict]:
    """Predict ``split`` and score it; the pass is timed and logged (``out["seconds"]``); ``out["dense"]``
    keeps the dense ``[D, N, H]`` arrays."""
    start = time.perf_counter()
    out, dense = _split_predictions(module, dm, split)
    out["dense"] = dense
    metrics = evaluate_predictions(dense["pred"], dense["target"], dense["mask"], module.horizons, None,
                                   cost_bps, valid=dense["valid"], lag=module.eval_lag)
    out["seconds"] = time.perf_counter() - start
    log.info("%s scoring: %s samples in %.1fs", split, f"{len(out['pred']):,}", out["seconds"])
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


def warm_start_linear_path(module: ATFTLightningModule, dm: PanelDataModule) -> dict | None:
    """Set the linear path (and the peer path) to the ridge fit on the training days
    (``model.linear_path.init=ridge``). Returns the peer block's admission record (``ridge_fit``; None
    without a peer path), for ``metrics.json`` ``info.peer_block``."""
    lin_cfg = module.cfg.model.get("linear_path") or {}
    if not isinstance(module.model.linear_path, LinearPath) or lin_cfg.get("init", "ridge") != "ridge":
        return None
    panel, w = dm.panel, dm.windows
    peers = None
    if isinstance(module.model.peer_path, PeerPath) and dm.graph_builder is not None:
        usable = dm.usable("train")

        def peers(d: int):  # the day's training-batch members and graph, as the loader builds them
            members = np.flatnonzero(usable[d])
            return members, dm.graph_builder.graph(d, members)[0]

    weight, bias, info = ridge_fit(panel.X, w.sample_ok, w.y_norm.numpy(), panel.Y_mask, panel.splits.train,
                                   alpha=float(lin_cfg.get("ridge_alpha", 1.0)), seed=int(module.cfg.seed),
                                   peers=peers, peer_margin_se=float(lin_cfg.get("peer_margin_se", 2.0)))
    F = panel.X.shape[2]
    module.model.linear_path.set_weights(weight[:F], bias)
    if peers is not None:
        module.model.peer_path.set_weights(weight[F:], np.zeros_like(bias))
    cv = (f", held-out daily IC {info['diff']:+.4f} (HAC SE {info['se']:.4f}, {info['days']} days) vs own features"
          if "diff" in info else "")
    log.info("linear path: ridge warm start on %d training days (alpha %g, |W| %.3f, peer block %s%s)",
             len(panel.splits.train), float(lin_cfg.get("ridge_alpha", 1.0)), float(np.linalg.norm(weight[:F])),
             "off" if peers is None else ("kept" if info["kept"] else "dropped"), cv)
    return info or None


MONITORED_METRICS = {"val/ic": "ic", "val/rank_ic": "rank_ic", "val/sharpe": "sharpe"}


def _val_daily(module: ATFTLightningModule, dm: PanelDataModule, key: str, dense: dict | None = None
               ) -> np.ndarray | None:
    """Daily validation ``key`` (``ic`` / ``rank_ic``) of the primary horizon ``[D]`` (NaN off the split),
    from ``dense`` (``_split_predictions``' arrays) when given, else from a validation pass; None for a
    monitor without a daily series."""
    if key not in ("ic", "rank_ic"):
        return None
    if dense is None:
        _, dense = _split_predictions(module, dm, "val")
    k = module.horizons.index(module.primary_horizon)
    fn = daily_rank_ic if key == "rank_ic" else daily_ic
    return fn(dense["pred"][..., k], dense["target"][..., k], dense["mask"][..., k])


def initial_candidate(module: ATFTLightningModule, dm: PanelDataModule, run_dir: Path | None = None,
                      resume_from: str | None = None) -> dict | None:
    """The model before training as a selection candidate: its weights now; its validation score and daily
    series once training is over (``score_initial``), so that validation pass is not part of the start-up.

    ``train.checkpoint.include_init`` (default true) with a monitor of ``MONITORED_METRICS``; None otherwise.
    With the ridge warm start this is the linear model (the deep branch's output muted: its last layer set
    to 0), so the selected model is never worse than it on validation. The weights are kept in ``initial.ckpt`` of ``run_dir``, and a resumed run
    (``resume_from``) reads them from there: it selects among the same candidates as an uninterrupted run.
    """
    ck = module.cfg.train.checkpoint
    if not ck.get("include_init", False) or MONITORED_METRICS.get(str(ck.monitor)) is None:
        return None
    path = Path(run_dir) / "initial.ckpt" if run_dir is not None else None  # beside checkpoints/, which
    # Lightning wants empty at the start of a fresh run
    if resume_from is not None:
        if path is None or not path.is_file():
            log.info("resumed run without initial.ckpt: the initial model is not a candidate")
            return None
        return {"score": None, "state": load_checkpoint(path, map_location=module.device)["state_dict"]}
    init = {"score": None, "state": _weights(module)}
    if isinstance(module.model.linear_path, LinearPath):
        # the candidate is the ridge start itself: the deep branch's small random initial output (training
        # starts from it, see deep_init_scale) is muted, so keeping this candidate keeps the linear fit exactly
        for key in ("model.prediction_head.w2", "model.prediction_head.b2"):
            init["state"][key].zero_()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        AtomicCheckpointIO().save_checkpoint({"state_dict": init["state"]}, path)
    return init


def _weights(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def score_initial(module: ATFTLightningModule, dm: PanelDataModule, init: dict | None) -> dict | None:
    """Fill in ``init["score"]``: the validation score of the initial weights (``module`` keeps its own)."""
    if init is None or init["score"] is not None:
        return init
    ck = module.cfg.train.checkpoint
    trained = _weights(module)
    module.load_state_dict(init["state"])
    metrics, out = _split_metrics(module, dm, "val", float(module.cfg.train.eval.cost_bps))
    key = MONITORED_METRICS[str(ck.monitor)]
    init["score"] = float(metrics[f"{module.primary_horizon}d"][key])
    init["daily"], init["key"] = _val_daily(module, dm, key, out["dense"]), key  # for select_model's margin
    module.load_state_dict(trained)
    log.info("Initial model (before training): val %s %.4f", ck.monitor, init["score"])
    return init


def _prefer_initial(init: dict | None, best_score, mode: str) -> bool:
    if init is None or not np.isfinite(init["score"]):
        return False
    if best_score is None or not np.isfinite(float(best_score)):
        return True
    return init["score"] > float(best_score) if mode == "max" else init["score"] < float(best_score)


def margin_over_initial(best_daily: np.ndarray, init_daily: np.ndarray, horizon: int) -> tuple[float, float]:
    """Paired daily difference best − initial on validation: ``(mean, HAC SE)`` over the days both score."""
    diff = np.asarray(best_daily, np.float64) - np.asarray(init_daily, np.float64)  # [D]
    diff = diff[np.isfinite(diff)]
    if len(diff) < 3:
        return float(np.mean(diff)) if len(diff) else float("nan"), float("nan")
    return float(diff.mean()), float(hac_se(diff, horizon))


def _keep_initial_by_margin(module, dm, init: dict | None, margin_se: float) -> dict | None:
    """``{"diff", "se"}`` when the best epoch (loaded in ``module``) beats the initial model on validation
    by no more than ``margin_se`` paired HAC SE (then the initial model is kept); None otherwise."""
    if init is None or margin_se <= 0 or init.get("daily") is None:
        return None
    best_daily = _val_daily(module, dm, init["key"])
    diff, se = margin_over_initial(best_daily, init["daily"], module.primary_horizon)
    if not np.isfinite(se) or diff > margin_se * se:
        return None
    return {"diff": diff, "se": se}


def selected_path(checkpoint: ModelCheckpoint) -> str:
    """The best checkpoint, else ``last.ckpt`` beside it (no epoch had a finite monitor value)."""
    last = Path(checkpoint.dirpath) / "last.ckpt"
    return checkpoint.best_model_path or (str(last) if last.is_file() else "")


def select_model(module, dm: PanelDataModule, checkpoint: ModelCheckpoint, init: dict | None) -> dict:
    """Load the selected weights into ``module``: the best epoch, or the initial model (then written to
    ``best.ckpt`` too, so evaluate/predict use the same model) where it scored better on validation or the
    best epoch beats it by no more than ``train.checkpoint.init_margin_se`` paired HAC SE of the daily
    validation difference (a one-standard-error rule: the simpler model stays unless training is
    measurably better; the maximum of a dozen noisy epoch scores is biased upwards)."""
    best = selected_path(checkpoint)
    ckpt = load_checkpoint(best, map_location=module.device) if best and Path(best).is_file() else None
    chosen = {"selected": f"epoch {int(ckpt['epoch']) + 1}" if ckpt else "last weights",
              "best_score": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None}
    margin_se = float(module.cfg.train.checkpoint.get("init_margin_se") or 0.0)
    keep_init, tie = _prefer_initial(init, checkpoint.best_model_score, str(checkpoint.mode)), None
    if not keep_init and ckpt is not None and init is not None:
        module.load_state_dict(ckpt["state_dict"])
        tie = _keep_initial_by_margin(module, dm, init, margin_se)
        keep_init = tie is not None
    if keep_init:
        module.load_state_dict(init["state"])
        chosen = {"selected": "initial model (before training)", "best_score": init["score"],
                  **({"margin": tie} if tie else {})}
        if tie is None:
            log.info("Selected the initial model: val %s %.4f beats every epoch", checkpoint.monitor, init["score"])
        else:
            log.info("Selected the initial model: the best epoch's val %s is above it by %.4f, within %.1f "
                     "paired HAC SE (%.4f)", checkpoint.monitor, tie["diff"], margin_se, tie["se"])
        if ckpt is not None:
            ckpt["state_dict"] = init["state"]
            AtomicCheckpointIO().save_checkpoint(ckpt, Path(checkpoint.dirpath) / "best.ckpt")
    elif ckpt is not None:
        module.load_state_dict(ckpt["state_dict"])
    chosen["initial_score"] = init["score"] if init is not None else None
    return chosen


def evaluate_best(module, dm: PanelDataModule, checkpoint: ModelCheckpoint, run_dir: Path, guard,
                  init: dict | None = None, score_test: bool = True, timing: dict | None = None,
                  peer_block: dict | None = None) -> dict:
    """Load the selected model (``select_model``), score validation and the test split once, write outputs.

    With ``score_test=False`` (hyper-parameter search) only validation is scored: ``"test"`` is None.
    ``timing`` (the training's :meth:`ProgressLog.summary`) goes to ``info.timing`` with the scoring times;
    ``peer_block`` (``warm_start_linear_path``'s record) to ``info.peer_block``.
    """
    chosen = select_model(module, dm, checkpoint, score_initial(module, dm, init))
    best = selected_path(checkpoint)
    cost = float(module.cfg.train.eval.cost_bps)
    val_metrics, val_out = _split_metrics(module, dm, "val", cost)
    timing = {**(timing or {}), "val_scoring_s": val_out["seconds"], "test_scoring_s": None}
    test_metrics = None
    if score_test:
        test_metrics, out = _split_metrics(module, dm, "test", cost)
        timing["test_scoring_s"] = out["seconds"]
        write_test_outputs(run_dir, dm.panel, module.horizons, out)
    info = {"checkpoint": str(best), **chosen, "monitor": checkpoint.monitor,
            "primary_horizon": module.primary_horizon, "cost_bps": cost, "lag": module.eval_lag,
            "splits": dm.panel.splits.describe(dm.panel.dates),
            "degeneracy_stop": guard.stopped_message if guard is not None else None, "timing": timing,
            "peer_block": peer_block}
    result = clean_json({"val": val_metrics, "test": test_metrics, "info": info})
    write_json(run_dir / "metrics.json", result)
    h = f"{module.primary_horizon}d"
    if test_metrics is None:
        v = val_metrics[h]
        log.info("Validation (selected model, %s, %d days): RankIC %.4f; test split not scored", h, v["days"],
                 v["rank_ic"])
        return result
    t = test_metrics[h]
    log.info("Test (best checkpoint, %s, %d days, cost %.1f bps): IC %.4f | RankIC %.4f | ICIR %.3f | "
             "Sharpe(%s) %.2f | Sharpe net %.2f", h, t["days"], cost, t["ic"], t["rank_ic"], t["icir"],
             lag_label(module.eval_lag), t["sharpe"], t["sharpe_net"])
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


def train(cfg, resume_from: str | None = None, dry_run_only: bool = False, replace_finished: bool = False,
          extra_callbacks=(), score_test: bool = True) -> dict:
    """Train on ``cfg.data.path``; returns the content of ``metrics.json`` (``{}`` on DDP worker ranks).

    ``extra_callbacks``: Lightning callbacks added after the built-in ones (``atft tune``'s pruner).
    ``score_test=False`` seals the test split: its loader raises, nothing on it is scored or written.

    Each run folder is locked for its run's life (:mod:`atft.run_lock`); a finished run's folder is
    refused unless ``resume_from`` continues it or ``replace_finished`` (a caller recomputing its own
    sub-runs). A lost DDP worker ends the run with a :class:`RunError`.
    """
    redact_config(cfg)  # no secret reaches config.yaml, a checkpoint or TensorBoard
    seeds = int((cfg.train.get("ensemble") or {}).get("seeds") or 1)
    if seeds > 1 and not dry_run_only:
        from atft.training.ensemble import train_ensemble

        return train_ensemble(cfg, seeds, partial(train_one, replace_finished=replace_finished,
                                                  extra_callbacks=extra_callbacks, score_test=score_test),
                              resume_from)
    return train_one(cfg, resume_from, dry_run_only, replace_finished, extra_callbacks, score_test)


def train_one(cfg, resume_from: str | None = None, dry_run_only: bool = False,
              replace_finished: bool = False, extra_callbacks=(), score_test: bool = True) -> dict:
    """One model: lock the run folder -> panel -> fit -> selection -> the test split scored once."""
    masked = redact_config(cfg)
    run_dir = resolve_run_dir(cfg)
    cfg.run_dir = str(run_dir)
    cfg.run_name = cfg.get("run_name") or run_dir.name
    claim = _rank() == 0 and not dry_run_only
    lock = claim_run_dir(run_dir, resume_from, "train", replace_finished) if claim else None
    log_file = Path(cfg.train.get("log_dir") or "_logs/training") / f"{cfg.run_name}.log"
    handlers = setup_run_logging(log_file if _rank() == 0 and not dry_run_only else None, console=_rank() == 0)
    if lock is not None and lock.stale_message:
        log.warning(lock.stale_message)
    if masked:
        log.warning("config keys %s held a secret value; masked in this run's records", ", ".join(masked))
    try:
        return _train(cfg, run_dir, log_file, resume_from, dry_run_only, extra_callbacks, score_test)
    except RuntimeError as exc:
        if not distributed_failure(exc, cfg):
            raise
        raise RunError(lost_worker_message(exc, run_dir)) from None
    finally:
        teardown_run_logging(handlers)
        if lock is not None:
            lock.release()


DIST_FAILURE_MARKERS = ("Connection closed by peer", "Connection reset by peer", "remote worker", "gloo", "NCCL")


def distributed_failure(exc: BaseException, cfg) -> bool:
    """Whether ``exc`` is a DDP collective/rendezvous failure (a lost worker, a timeout), not a bug."""
    if str(cfg.train.trainer.strategy) != "ddp":
        return False
    return isinstance(exc, torch.distributed.DistError) or any(m in str(exc) for m in DIST_FAILURE_MARKERS)


def lost_worker_message(exc: BaseException, run_dir: Path) -> str:
    """One line for a distributed failure: what happened, and how to finish the run."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    first = re.sub(r"^\[[^\]]*\]\s*", "", first)[:160]  # gloo prefixes its source location
    return (f"a distributed worker was lost ({first}); resume with --run-dir {run_dir} "
            f"--resume-from {run_dir / 'checkpoints' / 'last.ckpt'}")


def _train(cfg, run_dir: Path, log_file: Path, resume_from: str | None, dry_run_only: bool, extra_callbacks=(),
           score_test: bool = True) -> dict:
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    share = apply_cpu_share(cfg)
    governor = ThreadGovernor.from_config(cfg, share.threads)
    cfg.train.trainer.threads_used = {**cfg.train.trainer.threads_used, "adaptive": governor is not None}
    log.info("intra-op threads: %d (%s)%s", share.threads, share.source,
             ", adaptive (train.trainer.adaptive_threads)" if governor is not None else "")
    panel = load_panel(cfg.data.path, cfg.data, model_cfg=cfg.model)
    if resume_from:
        check_resume(resume_from, panel.feature_names, panel.horizons)
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
    peer_block = warm_start_linear_path(module, dm) if resume_from is None else None
    init = initial_candidate(module, dm, run_dir, resume_from) if _rank() == 0 else None
    n_batches = len(dm.train_dataloader())
    callbacks, checkpoint, guard = build_callbacks(cfg, run_dir, extra_callbacks, steps_per_epoch=n_batches)
    callbacks.append(NonFiniteGuard.from_config(cfg, panel.dates))
    if governor is not None:
        callbacks.append(governor)
    trainer = build_trainer(cfg, run_dir, callbacks, n_batches)
    if heap_for_training(cfg.train.trainer.get("malloc")):
        log.info("malloc: heap mode for training (the data is loaded; train.trainer.malloc=staged)")
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from)
    if guard is not None and guard.stopped_message:
        log.error("training stopped early by the degeneracy guard; evaluating the best checkpoint so far")
    if not trainer.is_global_zero:
        return {}
    progress = next(c for c in callbacks if isinstance(c, ProgressLog))
    return evaluate_best(module, dm, checkpoint, run_dir, guard, init, score_test=score_test,
                         timing=progress.summary(), peer_block=peer_block)
