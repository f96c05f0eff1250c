"""Degeneracy guard: detects collapsing predictions and resets the modules that produce them.

Check (every ``check_every`` training batches, after the optimiser step): the module's
``eval_prediction_terms(batch)`` - a no-grad **eval-mode** forward of the current batch (at most
``check_samples`` of its samples, ``check_subsample``), so dropout noise cannot pass for prediction
spread - gives, for each horizon ``h``, the per-day standard deviation of the predictions averaged over
the batch's days, ``s_h``. Horizon ``h`` is degenerate when

    s_h < pred_std_floor   or   s_h < target_std_frac * (per-day std of target_h)

(A module without ``eval_prediction_terms`` is read from ``last_terms``, the training step's terms.)
Non-check batches touch no tensor, so they add no host synchronisation.

Reset: every parameter ``p`` of the reset modules gets ``p += N(0, sigma_p^2)`` with

    sigma_p = scale * std(p)                    (relative to the parameter's own spread)
    sigma_p = scale / sqrt(fan_in)              when std(p) ~ 0 (e.g. zeroed weights),
                                                fan_in = shape[1] of a matrix, size of a vector

``scale`` starts at ``reset_scale`` (``DEGENERACY_RESET_SCALE``). The noise comes from a generator
seeded by ``(seed, global_step)`` so runs stay reproducible. The next ``recovery_batches`` batches are
then checked the same way (eval mode): the first healthy one logs ``variance restored``; if none is,
the reset failed, the scale is multiplied by ``escalation`` and the reset reaches one stage further
upstream (``reset_stages``: the prediction head, then the fusion, then the last temporal-encoder
layers; a collapse upstream of the head cannot be repaired at the head). Every ``reset applied`` line
names the modules it reset. After ``max_failures`` consecutive failures training stops with a
message saying so.
"""

from __future__ import annotations

import logging
import math

import lightning.pytorch as pl
import torch

log = logging.getLogger("atft.training")
TAG = "[DEGENERACY-GUARD]"


DEFAULT_STAGES = (("prediction_head",), ("fusion",), ("temporal_encoder.output_gate", "temporal_encoder.feed_forward"))


def reset_head(head: torch.nn.Module, scale: float, generator: torch.Generator) -> None:
    """Add Gaussian noise to every parameter of ``head`` (any module; module docstring for ``sigma_p``)."""
    with torch.no_grad():
        for p in head.parameters():
            std = float(p.detach().float().std()) if p.numel() > 1 else 0.0
            if not math.isfinite(std) or std < 1e-8:
                fan_in = p.shape[1] if p.dim() >= 2 else p.numel()
                std = 1.0 / math.sqrt(max(1, fan_in))
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32) * (scale * std)
            p.add_(noise.to(device=p.device, dtype=p.dtype))


def check_subsample(batch: dict, max_samples: int | None) -> dict:
    """At most ``max_samples`` samples of ``batch`` for a check forward: every ``ceil(B / max_samples)``-th
    sample (the batch is ordered by day, so every day keeps its share), with the day graph's edges among
    them re-indexed (edges to a dropped sample are dropped; self-loops stay). Per-sample entries are those
    with ``B`` rows; ``edge_index [2, E]`` / ``edge_attr [E, A]`` are filtered. ``None`` or ``B <= max``:
    the batch itself."""
    B = int(batch["y"].shape[0])
    if max_samples is None or B <= int(max_samples):
        return batch
    step = -(-B // int(max_samples))
    keep = torch.arange(0, B, step, device=batch["y"].device)  # [B'] sample positions
    out = {key: value[keep] for key, value in batch.items()
           if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == B
           and not key.startswith("edge_")}
    if batch.get("edge_index") is not None:
        from torch_geometric.utils import subgraph

        out["edge_index"], edge_attr = subgraph(keep, batch["edge_index"], batch.get("edge_attr"),
                                                relabel_nodes=True, num_nodes=B)
        if edge_attr is not None:
            out["edge_attr"] = edge_attr
    return out


def eval_terms(pl_module, batch) -> dict:
    """``pred_std`` / ``target_std`` of the model's eval-mode predictions on ``batch`` (training terms
    when the module has no ``eval_prediction_terms``)."""
    method = getattr(pl_module, "eval_prediction_terms", None)
    return method(batch) if method is not None else pl_module.last_terms


class DegeneracyGuard(pl.Callback):
    """Checks the eval-mode prediction spread every ``check_every`` training batches (``cfg.train.degeneracy``).

    Args:
        pred_std_floor: absolute trigger (default 1e-6, ``PRED_STD_FLOOR``).
        target_std_frac: relative trigger, share of the target's per-day std (default 0 = off).
        reset_scale: initial noise scale (default 0.05, ``DEGENERACY_RESET_SCALE``).
        check_every: batches between checks (default 1; each check costs one no-grad forward).
        recovery_batches: batches that may show recovery after a reset (default 2).
        escalation: scale multiplier after a failed recovery (default 2.0).
        max_failures: consecutive failed resets before training stops (default 5).
        seed: base seed of the noise generator.
        reset_stages: module paths (dotted, under ``pl_module.model``) added at each escalation stage;
            after ``k`` failed resets the reset covers stages ``0..k`` (default ``DEFAULT_STAGES``).
        check_samples: at most this many samples of the batch enter a check's forward (``check_subsample``;
            None: all). A per-day spread is estimated well from ~1,000 stocks, and a check of a 4,000-stock
            day at full size costs a third of a training step.
    """

    def __init__(self, pred_std_floor: float = 1e-6, target_std_frac: float = 0.0, reset_scale: float = 0.05,
                 check_every: int = 1, recovery_batches: int = 2, escalation: float = 2.0,
                 max_failures: int = 5, seed: int = 0, reset_stages=DEFAULT_STAGES,
                 check_samples: int | None = None):
        self.stages = [[str(m) for m in stage] for stage in reset_stages]
        if not self.stages or not all(self.stages):
            raise ValueError(f"train.degeneracy.reset_stages={reset_stages!r}: expected a non-empty list of "
                             "non-empty lists of module names, e.g. [[prediction_head], [fusion]]")
        self.floor, self.target_frac = float(pred_std_floor), float(target_std_frac)
        self.base_scale, self.scale = float(reset_scale), float(reset_scale)
        self.check_every, self.recovery_batches = max(1, int(check_every)), max(1, int(recovery_batches))
        self.escalation, self.max_failures, self.seed = float(escalation), int(max_failures), int(seed)
        self.check_samples = None if check_samples is None else max(2, int(check_samples))
        self.pending = 0  # batches left to show recovery after a reset (0: not recovering)
        self.failures = 0
        self.total_resets = 0
        self.stopped_message: str | None = None

    @classmethod
    def from_config(cls, cfg) -> DegeneracyGuard:
        d = cfg.train.degeneracy
        return cls(d.pred_std_floor, d.target_std_frac, d.reset_scale, d.check_every, d.recovery_batches,
                   d.escalation, d.max_failures, seed=cfg.seed, reset_stages=d.reset_stages,
                   check_samples=d.get("check_samples"))

    def degenerate(self, pred_std: torch.Tensor, target_std: torch.Tensor) -> int | None:
        """Index of the first degenerate horizon, or None."""
        threshold = torch.clamp(self.target_frac * target_std.float(), min=self.floor)  # [H]
        bad = (pred_std.float() < threshold) | ~torch.isfinite(pred_std.float())
        return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None

    def reset_modules(self) -> list[str]:
        """Module paths the next reset covers: stages ``0..failures`` (the last stage once exhausted)."""
        upto = min(self.failures, len(self.stages) - 1)
        return [m for stage in self.stages[:upto + 1] for m in stage]

    def _reset(self, trainer, pl_module, horizon: int, pred_std: float) -> None:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + trainer.global_step)
        names = self.reset_modules()
        for name in names:
            reset_head(pl_module.model.get_submodule(name), self.scale, generator)
        self.pending = self.recovery_batches
        self.total_resets += 1
        pl_module.resets_epoch += 1
        log.warning("%s reset applied (horizon=%sd, pred_std=%.3e, scale=%.3g, step=%d, modules=%s)", TAG,
                    pl_module.horizons[horizon], pred_std, self.scale, trainer.global_step, "+".join(names))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.pending == 0 and batch_idx % self.check_every:
            return  # not a check step: no forward, no host sync
        terms = eval_terms(pl_module, check_subsample(batch, self.check_samples))
        if not terms:
            return
        # DDP: every rank must take the same decision, or the weights would diverge across ranks
        pred_std = trainer.strategy.reduce(terms["pred_std"].detach().clone(), reduce_op="mean")
        target_std = trainer.strategy.reduce(terms["target_std"].detach().clone(), reduce_op="mean")
        bad = self.degenerate(pred_std, target_std)
        stds = ", ".join(f"{h}d={float(s):.3e}" for h, s in zip(pl_module.horizons, pred_std))
        if self.pending > 0:
            self.pending -= 1
            if bad is None:
                log.info("%s variance restored (eval-mode pred_std: %s; scale=%.3g)", TAG, stds, self.scale)
                self.pending, self.failures, self.scale = 0, 0, self.base_scale
                return
            if self.pending > 0:
                return
            self._failed(trainer, pl_module, bad, stds, float(pred_std[bad]))
            return
        if bad is not None:
            self._reset(trainer, pl_module, bad, float(pred_std[bad]))

    def _failed(self, trainer, pl_module, bad: int, stds: str, pred_std: float) -> None:
        self.failures += 1
        if self.failures >= self.max_failures:
            self.stopped_message = (f"{TAG} stopping training: {self.failures} consecutive resets failed to "
                                    f"restore variance (eval-mode pred_std: {stds}); raise DEGENERACY_RESET_SCALE or "
                                    f"VARIANCE_PENALTY_WEIGHT, or lower the learning rate")
            log.error(self.stopped_message)
            trainer.should_stop = True
            self.pending = 0
            return
        old, self.scale = self.scale, self.scale * self.escalation
        log.warning("%s Reset failed to restore variance (eval-mode pred_std: %s; failure %d/%d); escalating "
                    "scale %.3g -> %.3g, modules %s", TAG, stds, self.failures, self.max_failures, old, self.scale,
                    "+".join(self.reset_modules()))
        self._reset(trainer, pl_module, bad, pred_std)

    def state_dict(self) -> dict:
        return {"scale": self.scale, "failures": self.failures, "pending": self.pending,
                "total_resets": self.total_resets}

    def load_state_dict(self, state_dict: dict) -> None:
        self.scale = state_dict["scale"]
        self.failures, self.pending = state_dict["failures"], state_dict["pending"]
        self.total_resets = state_dict["total_resets"]
