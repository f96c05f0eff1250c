"""Multi-horizon loss on day batches: point (Huber / MSE) or pinball + correlation + variance penalty.

All terms are per day, because the model is judged cross-sectionally (IC within a day). With
``z[b, h] = (y[b, h] - mean_d y) / std_d y`` the per-day standardised target of sample ``b`` on its
day ``d`` (masked samples excluded from the day statistics) and ``p`` the prediction:

- point:    ``mean_{b, valid} huber_delta(p - z)`` (or squared error), per horizon;
            with quantiles ``q``: pinball ``mean max(q (z - p_q), (q - 1)(z - p_q))``.
- corr:     ``mean_d (1 - pearson_d(p, y))``, per horizon.
- variance: ``mean_d relu(frac * std_d(z) - std_d(p))^2 / std_d(z)^2``, per horizon. ``std_d(z) = 1``
            on every day with at least two targets, so this is ``relu(frac - std_d(p))^2``: zero while
            the day's predictions spread at least ``frac`` (``train.loss.variance_target_frac``,
            default 0.5) of the target's spread, and growing quadratically as they collapse.

``total = sum_h w_h (point_h + corr_weight * corr_h + variance_penalty_weight * variance_h)`` with
``w`` the normalised ``train.loss.horizon_weights``. Predictions live in standardised-target units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-8


def day_stats(values: torch.Tensor, mask: torch.Tensor, day: torch.Tensor, n_days: int):
    """Per-day count, mean and (population) std of masked values.

    Shapes: values, mask ``[B, H]``; day ``[B]`` -> count, mean, std ``[n_days, H]``.
    """
    m = mask.to(values.dtype)
    count = torch.zeros(n_days, values.shape[1], dtype=values.dtype, device=values.device)
    count = count.index_add(0, day, m)  # [n_days, H]
    total = torch.zeros_like(count).index_add(0, day, values * m)
    mean = total / count.clamp_min(1.0)  # [n_days, H]
    sq = torch.zeros_like(count).index_add(0, day, (values - mean[day]) ** 2 * m)
    # clamp, not +eps: sqrt'(0) is infinite and a collapsed (constant) prediction would turn every
    # gradient into NaN; below 1e-20 the clamp passes no gradient and the std reads 1e-10
    std = (sq / count.clamp_min(1.0)).clamp_min(1e-20).sqrt()  # [n_days, H]
    return count, mean, std


def standardise_per_day(y: torch.Tensor, mask: torch.Tensor, day: torch.Tensor, n_days: int) -> torch.Tensor:
    """``(y - mean_d) / std_d`` over each day's masked samples; 0 where masked. ``[B, H]``."""
    _, mean, std = day_stats(y, mask, day, n_days)
    z = (y - mean[day]) / (std[day] + EPS)  # [B, H]
    return torch.where(mask, z, torch.zeros_like(z))


def per_day_corr(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, day: torch.Tensor, n_days: int):
    """Pearson correlation of ``pred`` and ``y`` within each day. -> corr, valid ``[n_days, H]``."""
    count, mp, sp = day_stats(pred, mask, day, n_days)
    _, my, sy = day_stats(y, mask, day, n_days)
    m = mask.to(pred.dtype)
    cov = torch.zeros_like(count).index_add(0, day, (pred - mp[day]) * (y - my[day]) * m) / count.clamp_min(1.0)
    corr = cov / (sp * sy + EPS)  # [n_days, H]
    return corr, count >= 2


def pinball(pred_q: torch.Tensor, z: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """Quantile (pinball) loss. pred_q ``[B, H, Q]``, z ``[B, H]``, quantiles ``[Q]`` -> ``[B, H]``."""
    err = z[..., None] - pred_q  # [B, H, Q]
    return torch.maximum(quantiles * err, (quantiles - 1.0) * err).mean(-1)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-horizon mean over the masked rows. ``[R, H]`` -> ``[H]``."""
    m = mask.to(values.dtype)
    return (values * m).sum(0) / m.sum(0).clamp_min(1.0)


def multi_horizon_loss(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, day: torch.Tensor, *,
                       loss_type: str = "huber", huber_delta: float = 1.0, corr_weight: float = 0.1,
                       variance_penalty_weight: float = 0.01, variance_target_frac: float = 0.5,
                       horizon_weights: torch.Tensor | None = None, pred_q: torch.Tensor | None = None,
                       quantiles: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The training objective (module docstring). Computed in float32 whatever the autocast precision.

    Shapes: pred, y ``[B, H]``; mask ``[B, H]`` bool; day ``[B]`` (0..n_days-1); pred_q ``[B, H, Q]``.
    Returns ``loss`` (scalar) and the per-horizon terms ``point``, ``corr``, ``variance`` ``[H]``,
    plus ``pred_std`` / ``target_std`` ``[H]`` (mean per-day std, for the degeneracy guard).
    """
    pred, y = pred.float(), y.float()
    # B rows bound the day count (day < B) without reading day.max() back to the host (no sync in the
    # step); rows of absent days have count 0 and every per-day term is masked by day_ok (count >= 2)
    n_days = max(day.numel(), 1)
    z = standardise_per_day(y, mask, day, n_days)  # [B, H]
    if pred_q is not None:
        point = _masked_mean(pinball(pred_q.float(), z, quantiles.to(z)), mask)
    elif loss_type == "mse":
        point = _masked_mean((pred - z) ** 2, mask)
    else:
        point = _masked_mean(F.huber_loss(pred, z, reduction="none", delta=huber_delta), mask)
    corr, day_ok = per_day_corr(pred, y, mask, day, n_days)  # [n_days, H]
    corr_term = _masked_mean(1.0 - corr, day_ok)
    _, _, std_p = day_stats(pred, mask, day, n_days)
    count, _, std_z = day_stats(z, mask, day, n_days)
    variance = _masked_mean(F.relu(variance_target_frac * std_z - std_p) ** 2 / (std_z**2 + EPS), day_ok)
    per_h = point + corr_weight * corr_term + variance_penalty_weight * variance  # [H]
    w = torch.ones_like(per_h) if horizon_weights is None else horizon_weights.to(per_h)
    w = w / w.sum()
    _, _, std_y = day_stats(y, mask, day, n_days)
    return {"loss": (w * per_h).sum(), "point": point.detach(), "corr": corr_term.detach(),
            "variance": variance.detach(), "pred_std": _masked_mean(std_p, day_ok).detach(),
            "target_std": _masked_mean(std_y, day_ok).detach()}
