"""Non-finite steps are skipped, never applied: a NaN/inf loss or gradient must not reach the weights.

``NonFiniteGuard`` runs after backward and before the optimiser (Lightning calls
``on_before_optimizer_step`` before gradient clipping and ``optimizer.step``). When the batch's loss or
any gradient is not finite, it drops every gradient (``p.grad = None``: AdamW then leaves those
parameters and their moments untouched), logs one ``[NONFINITE]`` line with the batch's dates, and
counts. After ``train.nonfinite.max_consecutive`` such steps in a row the run stops with a
:class:`~atft.errors.RunError` naming the last checkpoint, so no NaN weights are ever written.

Under DDP the decision is reduced over ranks (any rank non-finite -> every rank skips), so the replicas
stay identical. With ``16-mixed`` precision the gradient check is left to the GradScaler (which skips
overflowing steps itself and lowers its scale); the loss is still checked.
"""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import numpy as np
import torch

from atft.errors import RunError

log = logging.getLogger("atft.training")


def finite_step(loss: torch.Tensor | None, params: list[torch.nn.Parameter], check_grads: bool = True) -> bool:
    """Whether ``loss`` and every gradient of ``params`` are finite (one host sync)."""
    parts = [] if loss is None else [loss.detach().float().reshape(1)]
    grads = [p.grad for p in params if p.grad is not None] if check_grads else []
    if grads:
        parts.append(torch.stack(torch._foreach_norm(grads)).float().sum().reshape(1))
    return bool(torch.isfinite(torch.cat(parts)).all()) if parts else True


class NonFiniteGuard(pl.Callback):
    """Skips steps whose loss or gradients are not finite; stops after ``max_consecutive`` in a row.

    Args:
        max_consecutive: consecutive skipped steps that stop the run (``train.nonfinite.max_consecutive``).
        dates: ``[D]`` the panel's trading days (to name a bad batch's dates).
        check_grads: also check gradients (False under ``16-mixed``, where the GradScaler does it).
    """

    def __init__(self, max_consecutive: int, dates: np.ndarray, check_grads: bool = True):
        self.max_consecutive = max(1, int(max_consecutive))
        self.dates = dates
        self.check_grads = check_grads
        self.consecutive = 0
        self.skipped = 0
        self._date_idx: torch.Tensor | None = None  # [B] the current batch's day indices (read only when bad)

    @classmethod
    def from_config(cls, cfg, dates: np.ndarray) -> NonFiniteGuard:
        return cls(int(cfg.train.nonfinite.max_consecutive), dates,
                   check_grads=str(cfg.train.trainer.precision) != "16-mixed")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._date_idx = batch.get("date_idx")  # no host sync here: the dates are looked up only for a bad step

    def batch_dates(self) -> str:
        """The current batch's trading days, comma-separated."""
        if self._date_idx is None:
            return "?"
        return ",".join(str(self.dates[d]) for d in torch.unique(self._date_idx).cpu().numpy())

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        loss = pl_module.last_terms.get("loss") if pl_module.last_terms else None
        params = [p for group in optimizer.param_groups for p in group["params"]]
        bad = not finite_step(loss, params, self.check_grads)
        bad = bool(trainer.strategy.reduce_boolean_decision(bad, all=False))  # any rank -> all ranks skip
        if not bad:
            self.consecutive = 0
            return
        for p in params:
            p.grad = None
        self.consecutive += 1
        self.skipped += 1
        what = "loss" if loss is not None and not torch.isfinite(loss.detach()).all() else "gradient"
        dates = self.batch_dates()
        log.warning("[NONFINITE] step %d (epoch %d): non-finite %s on batch dates %s; step skipped "
                    "(%d in a row, %d in total)", trainer.global_step, trainer.current_epoch + 1, what, dates,
                    self.consecutive, self.skipped)
        if self.consecutive >= self.max_consecutive:
            raise RunError(f"training stopped: {self.consecutive} consecutive steps had a non-finite loss or "
                           f"gradient (train.nonfinite.max_consecutive={self.max_consecutive}; last batch dates "
                           f"{dates}); no NaN weights were written, the last finite checkpoint is kept in "
                           f"{trainer.default_root_dir}/checkpoints")

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
