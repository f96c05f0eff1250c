"""The one training loop: a LightningModule around ``ATFT_GAT_FAN`` (any model variant is passed in by config).

Training: the multi-horizon loss of ``atft.training.losses`` on day batches; AdamW with linear warm-up
then cosine decay (per optimiser step). Validation: predictions are collected into a dense
``[D, N, H]`` panel and scored by ``atft.evaluation.metrics.evaluate_predictions`` (the one source of
reported numbers), the books at the execution lag ``train.eval.lag`` (default 1, tradeable). Callbacks
(degeneracy guard, gradient monitor, epoch summary) read the attributes documented on the class.
"""

from __future__ import annotations

import logging
import math
import time

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from atft.config import cfg_get
from atft.errors import InputError
from atft.evaluation.metrics import TRADEABLE_LAG, evaluate_predictions
from atft.model import NoPath, build_model
from atft.training.losses import multi_horizon_loss

log = logging.getLogger("atft.training")
_IMPORTED_AT = time.time()


def dense_predictions(date_idx: np.ndarray, stock_idx: np.ndarray, pred: np.ndarray, y: np.ndarray,
                      y_mask: np.ndarray) -> dict[str, np.ndarray]:
    """Long samples -> dense arrays over the days and stocks present.

    Shapes: date_idx, stock_idx ``[S]``; pred, y, y_mask ``[S, H]`` -> ``pred``, ``target``, ``mask``
    ``[D, N, H]`` (NaN / False where no sample), ``valid [D, N]``, ``days [D]``, ``stocks [N]``.
    """
    days, di = np.unique(date_idx, return_inverse=True)
    stocks, ni = np.unique(stock_idx, return_inverse=True)
    H = pred.shape[1]
    out_pred = np.full((len(days), len(stocks), H), np.nan)  # [D, N, H]
    out_target = np.full_like(out_pred, np.nan)
    out_mask = np.zeros(out_pred.shape, dtype=bool)
    valid = np.zeros((len(days), len(stocks)), dtype=bool)  # [D, N]
    out_pred[di, ni] = pred
    out_target[di, ni] = np.where(y_mask, y, np.nan)
    out_mask[di, ni] = y_mask
    valid[di, ni] = True
    return {"pred": out_pred, "target": out_target, "mask": out_mask, "valid": valid, "days": days,
            "stocks": stocks}


def seconds_since_process_start() -> float:
    """Wall seconds since this process was started (start-up time, interpreter and imports included)."""
    try:
        import psutil

        return time.time() - psutil.Process().create_time()
    except ImportError:  # psutil is optional: fall back to the time since this module was imported
        return time.time() - _IMPORTED_AT


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps to 1, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class ATFTLightningModule(pl.LightningModule):
    """Trains ``build_model(cfg.model, n_features, horizons)`` on day batches.

    Args:
        cfg: the full resolved config (stored in the checkpoint's hyper-parameters).
        n_features: F.
        horizons: the H target horizons in days.

    Attributes read by callbacks: ``last_terms`` (loss terms of the last training batch: ``pred_std``,
    ``target_std`` ``[H]``), ``eval_prediction_terms(batch)`` (the same terms from an eval-mode forward,
    for the degeneracy guard), ``resets_epoch``, ``encoder_grad_norms``, ``val_metrics``, ``val_loss``,
    ``train_loss_epoch``.
    """

    def __init__(self, cfg, n_features: int, horizons: list[int]):
        super().__init__()
        cfg_dict = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        self.save_hyperparameters({"cfg": cfg_dict, "n_features": int(n_features),
                                   "horizons": [int(h) for h in horizons]})
        self.cfg = OmegaConf.create(cfg_dict)
        self.horizons = [int(h) for h in horizons]
        model_cfg = OmegaConf.merge(self.cfg.model, {"lookback": int(self.cfg.data.lookback)})
        self.model = build_model(model_cfg, int(n_features), self.horizons)
        loss = self.cfg.train.loss
        weights = loss.get("horizon_weights")
        self.register_buffer("horizon_weights", torch.tensor(list(weights) if weights else [1.0] * len(horizons),
                                                             dtype=torch.float32), persistent=False)
        q = self.cfg.model.get("quantiles")
        self.register_buffer("quantile_levels", torch.tensor(sorted(q) if q else [], dtype=torch.float32),
                             persistent=False)
        self.last_terms: dict[str, torch.Tensor] = {}
        self.resets_epoch = 0
        self.encoder_grad_norms: dict[str, float] = {}
        self.val_metrics: dict = {}
        self.val_loss = float("nan")
        self.train_loss_epoch = float("nan")
        self._train_losses: list[torch.Tensor] = []
        self._val_rows: list[tuple] = []
        self._val_losses: list[tuple[float, int]] = []

    # ---------------------------------------------------------------- forward and loss
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        edge_index = batch.get("edge_index")
        if edge_index is not None and edge_index.numel() == 0:
            edge_index = None  # no day graph: the GAT uses self-loops only
        return self.model(batch["x"], edge_index, batch.get("edge_attr"), batch.get("x_mask"))

    def loss_terms(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        loss = self.cfg.train.loss
        return multi_horizon_loss(
            out["predictions"], batch["y"], batch["y_mask"], batch["day"], y_norm=batch.get("y_norm"),
            loss_type=str(loss.type), huber_delta=float(loss.huber_delta), corr_weight=float(loss.corr_weight),
            variance_penalty_weight=float(loss.variance_penalty_weight),
            variance_target_frac=float(loss.variance_target_frac), horizon_weights=self.horizon_weights,
            pred_q=out.get("quantiles"), quantiles=self.quantile_levels if len(self.quantile_levels) else None,
            listnet_temperature=float(loss.listnet_temperature), pairs_per_sample=int(loss.pairs_per_sample))

    def monitor_step(self) -> bool:
        """Whether this optimiser step is a gradient-monitor step (the first, then every ``every``)."""
        every = max(1, int(self.cfg.train.monitor.grad_monitor.every))
        return self.global_step == 0 or self.global_step % every == 0

    def _attach_encoder_hooks(self, out: dict) -> None:
        """Record the gradient norm reaching the encoder tensors on monitor steps (ENABLE_ENCODER_GRAD_HOOKS)."""
        self.encoder_grad_norms = {}
        for name in ("projected_features", "normalized_features"):
            tensor = out.get(name)
            if tensor is not None and tensor.requires_grad:
                tensor.register_hook(lambda g, n=name: self.encoder_grad_norms.__setitem__(
                    n, float(g.detach().float().norm())))

    # ---------------------------------------------------------------- training
    def on_train_epoch_start(self) -> None:
        self.resets_epoch = 0
        self._train_losses = []

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        if not getattr(self, "_started", False):
            self._started = True
            log.info("first training step: %.1f s after the process started", seconds_since_process_start())
        if batch_idx == 0:
            # dropout depends only on (seed, epoch, rank), so a resumed run continues exactly. Seeded here,
            # after the epoch's DataLoader iterator has drawn its base seed (a resume changes that order).
            pl.seed_everything(int(self.cfg.seed) * 1000 + self.current_epoch * 7 + self.global_rank,
                               workers=True, verbose=False)

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        out = self(batch)
        if self.cfg.train.monitor.encoder_grad_hooks and self.monitor_step():
            self._attach_encoder_hooks(out)
        terms = self.loss_terms(out, batch)
        self.last_terms = terms
        batch_size = int(batch["y"].shape[0])
        self.log("train/loss", terms["loss"], on_step=True, on_epoch=True, batch_size=batch_size, prog_bar=True)
        self._train_losses.append(terms["loss"].detach())
        return {"loss": terms["loss"], "pred_std": terms["pred_std"], "target_std": terms["target_std"]}

    @torch.no_grad()
    def eval_prediction_terms(self, batch: dict) -> dict[str, torch.Tensor]:
        """Loss terms (``pred_std``, ``target_std`` ...) of an eval-mode forward of ``batch``: the predictions
        the model makes, without dropout noise. For the degeneracy guard's check steps; every module's
        train/eval mode is restored afterwards. With a linear path the terms are those of the deep branch
        alone: the path's ridge-like spread would hide a network that has collapsed behind it."""
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            out = self(batch)
            if "deep_predictions" in out and not isinstance(self.model.linear_path, NoPath):
                out = {**out, "predictions": out["deep_predictions"]}
            return self.loss_terms(out, batch)
        finally:
            for m, mode in modes:
                m.training = mode

    def on_train_epoch_end(self) -> None:
        if self._train_losses:
            self.train_loss_epoch = float(torch.stack(self._train_losses).float().mean())
        self.log("train/degeneracy_resets", float(self.resets_epoch), sync_dist=True)

    # ---------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._val_rows, self._val_losses = [], []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self(batch)
        terms = self.loss_terms(out, batch)
        self._val_losses.append((float(terms["loss"]), int(batch["y"].shape[0])))
        self._val_rows.append(tuple(t.detach().float().cpu().numpy() for t in (
            batch["date_idx"], batch["stock_idx"], out["predictions"], batch["y"], batch["y_mask"])))

    def on_validation_epoch_end(self) -> None:
        if not self._val_rows:
            return
        date_idx, stock_idx, pred, y, y_mask = (np.concatenate(c) for c in zip(*self._val_rows))
        dense = dense_predictions(date_idx.astype(np.int64), stock_idx.astype(np.int64), pred, y,
                                  y_mask.astype(bool))
        self.val_metrics = evaluate_predictions(dense["pred"], dense["target"], dense["mask"], self.horizons,
                                                None, float(self.cfg.train.eval.cost_bps), valid=dense["valid"],
                                                lag=self.eval_lag)
        losses, sizes = np.array(self._val_losses).T
        self.val_loss = float((losses * sizes).sum() / sizes.sum())
        logs = {"val/loss": self.val_loss}
        for key in ("ic", "rank_ic", "sharpe"):
            for h in self.horizons:
                logs[f"val/{key}_{h}d"] = float(self.val_metrics[f"{h}d"][key])
            logs[f"val/{key}"] = logs[f"val/{key}_{self.primary_horizon}d"]
        # every rank validates on all days, so the synced mean equals each rank's value
        self.log_dict(logs, sync_dist=True)

    @property
    def eval_lag(self) -> int:
        """Execution lag of the validation/test books (``train.eval.lag``; 1 for runs older than the key)."""
        return int(cfg_get(self.cfg.train.eval, "lag", TRADEABLE_LAG))

    @property
    def primary_horizon(self) -> int:
        h = int(self.cfg.train.eval.primary_horizon)
        return h if h in self.horizons else self.horizons[0]

    # ---------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        opt_cfg = self.cfg.train.optimizer
        optimizer = torch.optim.AdamW(self.parameters(), lr=float(opt_cfg.lr),
                                      weight_decay=float(opt_cfg.weight_decay))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if opt_cfg.get("schedule_epochs"):  # the schedule must not change when a run is resumed for longer
            total = max(1, total // max(1, self.trainer.max_epochs) * int(opt_cfg.schedule_epochs))
        warmup = max(1, int(float(opt_cfg.warmup_frac) * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total, warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def predict_loader(self, loader, complete=None) -> dict[str, np.ndarray]:
        """Predictions of every batch of ``loader`` (eval mode, fp32): long arrays ``[S]`` / ``[S, H]`` /
        ``[S, F]`` for ``date_idx``, ``stock_idx``, ``pred``, ``y``, ``y_mask``, ``feature_weights``, plus
        ``quantiles [S, H, Q]`` for a quantile head."""
        was_training = self.training
        self.eval()
        rows = []
        for batch in loader:
            batch = {k: v.to(self.device) for k, v in batch.items()}
            batch = complete(batch) if complete is not None else batch
            out = self(batch)
            row = {"date_idx": batch["date_idx"], "stock_idx": batch["stock_idx"], "pred": out["predictions"],
                   "y": batch["y"], "y_mask": batch["y_mask"], "feature_weights": out["feature_weights"]}
            if "quantiles" in out:
                row["quantiles"] = out["quantiles"]  # [B, H, Q]
            rows.append({k: t.detach().float().cpu().numpy() for k, t in row.items()})
        self.train(was_training)
        if not rows:
            raise InputError("no sample has enough valid history (data.lookback, min_history_frac) to predict")
        result = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
        result["date_idx"] = result["date_idx"].astype(np.int64)
        result["stock_idx"] = result["stock_idx"].astype(np.int64)
        result["y_mask"] = result["y_mask"].astype(bool)
        return result
