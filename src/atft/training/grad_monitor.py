"""Gradient monitor: per-module gradient norms, vanishing-gradient warnings and encoder gradient hooks.

At the first optimiser step and then every ``every`` steps (``GRAD_MONITOR_EVERY``), before gradient
clipping, the L2 norm of the gradients of each named module of the model is

- logged as ``[GRAD-MONITOR] step=S <module>: norm=X`` (``ENABLE_GRAD_MONITOR=1``),
- warned as ``[GRAD-MONITOR] <module>: norm X < W`` when below ``GRAD_MONITOR_WARN_NORM`` (a module whose
  parameters got no gradient at all, e.g. frozen or detached, has norm 0),
- written to TensorBoard as ``grad_norm/<module>`` and appended to ``grad_norms.jsonl`` in the run folder.

With ``ENABLE_ENCODER_GRAD_HOOKS=1`` the gradient norms reaching the encoder tensors on the same steps are
logged as ``[ENCODER-GRAD] projected_features: grad_norm=X normalized_features: grad_norm=Y``.

At each epoch end every module's mean logged norm is classified against the seed's healthy ranges.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import lightning.pytorch as pl
import torch

from atft.model import MODULE_NAMES

log = logging.getLogger("atft.training")
TAG = "[GRAD-MONITOR]"
# the six modules DESIGN.md names (the fusion gate and the linear paths have no reference ranges)
MONITORED = tuple(name for name in MODULE_NAMES if name not in ("fusion", "linear_path", "peer_path", "interaction_path"))
ENCODER_TENSORS = ("projected_features", "normalized_features")
# healthy ranges of the seed's quick reference (modules not listed there have none)
HEALTHY = {"backbone_projection": (1e-2, 1e0), "adaptive_norm": (1e-2, 1e0),
           "temporal_encoder": (1e-1, 1e1), "prediction_head": (1e-1, 1e1)}


def module_grad_norm(module: torch.nn.Module) -> float:
    """L2 norm over all parameter gradients of ``module`` (missing gradients count as zero)."""
    total = 0.0
    for p in module.parameters():
        if p.grad is not None:
            total += float(p.grad.detach().float().pow(2).sum())
    return math.sqrt(total)


def classify(name: str, norm: float) -> str:
    """``healthy`` / ``LOW`` / ``HIGH`` against the seed's range, or ``no reference range``."""
    if name not in HEALTHY:
        return "no reference range"
    lo, hi = HEALTHY[name]
    return "healthy" if lo <= norm <= hi else ("LOW" if norm < lo else "HIGH")


class GradientMonitor(pl.Callback):
    """Logs module gradient norms (and encoder gradients) every ``every`` optimiser steps.

    Args:
        every: interval in optimiser steps (default 200).
        warn_norm: warning threshold (default 1e-7).
        module_norms: log per-module norms (``ENABLE_GRAD_MONITOR``).
        encoder_hooks: log encoder tensor gradients (``ENABLE_ENCODER_GRAD_HOOKS``).
        jsonl_path: file to append ``{"step", "epoch", "norms", "encoder"}`` records to (None: none).
    """

    def __init__(self, every: int = 200, warn_norm: float = 1e-7, module_norms: bool = True,
                 encoder_hooks: bool = False, jsonl_path: str | Path | None = None):
        self.every, self.warn_norm = max(1, int(every)), float(warn_norm)
        self.module_norms, self.encoder_hooks = bool(module_norms), bool(encoder_hooks)
        self.jsonl_path = Path(jsonl_path) if jsonl_path else None
        self._epoch_norms: dict[str, list[float]] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_norms = {name: [] for name in MONITORED}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not pl_module.monitor_step():
            return
        step = trainer.global_step
        record = {"step": step, "epoch": trainer.current_epoch}
        if self.module_norms:
            record["norms"] = self._module_norms(trainer, pl_module, step)
        if self.encoder_hooks and pl_module.encoder_grad_norms:
            enc = pl_module.encoder_grad_norms
            record["encoder"] = dict(enc)
            if trainer.is_global_zero:
                log.info("[ENCODER-GRAD] step=%d %s", step,
                         " ".join(f"{k}: grad_norm={enc[k]:.3e}" for k in ENCODER_TENSORS if k in enc))
        if self.jsonl_path is not None and trainer.is_global_zero:
            with self.jsonl_path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")

    def _module_norms(self, trainer, pl_module, step: int) -> dict[str, float]:
        norms = {}
        for name in MONITORED:
            module = getattr(pl_module.model, name, None)
            if module is None or not any(True for _ in module.parameters()):
                continue  # e.g. adaptive_norm=none has no parameters to monitor
            norm = module_grad_norm(module)
            norms[name] = norm
            self._epoch_norms.setdefault(name, []).append(norm)
            if not trainer.is_global_zero:
                continue
            log.info("%s step=%d %s: norm=%.3e", TAG, step, name, norm)
            if norm < self.warn_norm:
                log.warning("%s %s: norm %.2e < %.0e", TAG, name, norm, self.warn_norm)
            if trainer.logger is not None and hasattr(trainer.logger.experiment, "add_scalar"):
                trainer.logger.experiment.add_scalar(f"grad_norm/{name}", norm, step)
        return norms

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.module_norms or not trainer.is_global_zero:
            return
        for name, norms in self._epoch_norms.items():
            if norms:
                mean = sum(norms) / len(norms)
                lo_hi = HEALTHY.get(name)
                ref = f" (range {lo_hi[0]:.0e}..{lo_hi[1]:.0e})" if lo_hi else ""
                log.info("%s epoch=%d summary %s: mean_norm=%.3e %s%s", TAG, trainer.current_epoch + 1, name,
                         mean, classify(name, mean), ref)
