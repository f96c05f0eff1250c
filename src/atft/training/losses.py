"""Multi-horizon loss on day batches: a point, ranking or quantile term + correlation + variance penalty.

All terms are per day, because the model is judged cross-sectionally (IC within a day). ``z[b, h]`` is
the sample's cross-sectional training target (``atft.training.targets``: by default the day's returns
winsorised and z-scored; when the batch carries none, the plain per-day z-score of ``y``), ``p`` the
prediction. ``train.loss.type`` picks the main term, per horizon:

- ``huber`` / ``mse``: ``mean_{b, valid} huber_delta(p - z)`` (or squared error).
- ``ic``: ``mean_d (1 - pearson_d(p, z))``, a differentiable per-day correlation loss; scale-free, so
  the prediction's level and spread are left to the variance penalty.
- ``listnet``: ListNet's top-one cross entropy per day (Cao et al. 2007),
  ``-sum_{b in d} softmax_d(z / tau)_b log softmax_d(p)_b``, ``tau`` = ``train.loss.listnet_temperature``.
- ``pairwise``: RankNet on ``train.loss.pairs_per_sample`` random same-day partners ``j`` of each
  sample ``b``, weighted by how far apart their targets are:
  ``mean |z_b - z_j| softplus(-sign(z_b - z_j) (p_b - p_j))``.
- with quantiles ``q`` (``model.quantiles``): pinball ``mean max(q (z - p_q), (q - 1)(z - p_q))``.

Beside the main term:

- corr:     ``mean_d (1 - pearson_d(p, z))``, per horizon, weighted by ``corr_weight``.
- variance: ``mean_d relu(frac * std_d(z) - std_d(p))^2 / std_d(z)^2``, per horizon. ``std_d(z) = 1``
            on every day with at least two targets, so this is ``relu(frac - std_d(p))^2``: zero while
            the day's predictions spread at least ``frac`` (``train.loss.variance_target_frac``,
            default 0.5) of the target's spread, and growing quadratically as they collapse. It keeps
            working under every main term, including the scale-free ranking ones.

``total = sum_h w_h (main_h + corr_weight * corr_h + variance_penalty_weight * variance_h)`` with
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


def listnet(pred: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, day: torch.Tensor, n_days: int,
            temperature: float = 1.0) -> torch.Tensor:
    """ListNet top-one cross entropy per day, averaged over the days with >= 2 targets. -> ``[H]``.

    Shapes: pred, z, mask ``[B, H]``; day ``[B]``.
    """
    m = mask.to(pred.dtype)
    log_p = _segment_log_softmax(pred, m, day, n_days)  # [B, H]
    log_t = _segment_log_softmax(z / temperature, m, day, n_days)
    ce = torch.zeros(n_days, pred.shape[1], dtype=pred.dtype, device=pred.device)
    ce = ce.index_add(0, day, -(log_t.exp() * log_p) * m)  # [n_days, H]
    count = torch.zeros_like(ce).index_add(0, day, m)
    # minus log n, the cross entropy of a constant prediction: the term reads 0 for a prediction with no
    # information on any day size, and below 0 as the prediction's ranking approaches the target's
    return _masked_mean(ce - count.clamp_min(1.0).log(), count >= 2)


def _segment_log_softmax(x: torch.Tensor, m: torch.Tensor, day: torch.Tensor, n_days: int) -> torch.Tensor:
    """``log softmax`` of ``x`` within each day over the rows where ``m`` is 1. ``[B, H]``."""
    masked = torch.where(m > 0, x, torch.full_like(x, -1e30))
    top = torch.full((n_days, x.shape[1]), -1e30, dtype=x.dtype, device=x.device)
    top = top.scatter_reduce(0, day[:, None].expand_as(x), masked, reduce="amax").detach()  # [n_days, H]
    shifted = torch.where(m > 0, x - top[day], torch.zeros_like(x))
    total = torch.zeros_like(top).index_add(0, day, shifted.exp() * m)  # [n_days, H]
    return shifted - total.clamp_min(1e-30).log()[day]


def pairwise(pred: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, day: torch.Tensor, n_days: int,
             pairs_per_sample: int = 4) -> torch.Tensor:
    """RankNet on random same-day partners, weighted by the targets' distance. -> ``[H]``.

    Each sample draws ``pairs_per_sample`` partners uniformly from its own day (the same partners for
    every horizon; pairs with a missing target or equal targets do not count).
    Shapes: pred, z, mask ``[B, H]``; day ``[B]``.
    """
    order = torch.argsort(day, stable=True)  # [B] rows grouped by day
    count = torch.zeros(n_days, dtype=torch.long, device=day.device).index_add(0, day, torch.ones_like(day))
    start = torch.cumsum(count, 0) - count  # [n_days] first sorted position of each day
    draws = torch.rand(pairs_per_sample, day.numel(), device=day.device)  # [K, B]
    partner = order[start[day] + (draws * count[day]).long().clamp_max(count[day] - 1)]  # [K, B]
    dz = z[None] - z[partner]  # [K, B, H]
    dp = pred[None] - pred[partner]
    ok = (mask[None] & mask[partner] & (dz != 0)).to(pred.dtype)
    loss = dz.abs() * F.softplus(-torch.sign(dz) * dp)  # [K, B, H]
    return (loss * ok).sum((0, 1)) / ok.sum((0, 1)).clamp_min(1.0)


LOSS_TYPES = ("huber", "mse", "ic", "listnet", "pairwise")


def multi_horizon_loss(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, day: torch.Tensor, *,
                       y_norm: torch.Tensor | None = None, loss_type: str = "huber", huber_delta: float = 1.0,
                       corr_weight: float = 0.1, variance_penalty_weight: float = 0.01,
                       variance_target_frac: float = 0.5, horizon_weights: torch.Tensor | None = None,
                       pred_q: torch.Tensor | None = None, quantiles: torch.Tensor | None = None,
                       listnet_temperature: float = 1.0, pairs_per_sample: int = 4) -> dict[str, torch.Tensor]:
    """The training objective (module docstring). Computed in float32 whatever the autocast precision.

    Shapes: pred, y ``[B, H]``; mask ``[B, H]`` bool; day ``[B]`` (0..n_days-1); y_norm ``[B, H]`` the
    cross-sectional training target (None -> per-day z-score of ``y``); pred_q ``[B, H, Q]``.
    Returns ``loss`` (scalar) and the per-horizon terms ``point`` (the main term), ``corr``, ``variance``
    ``[H]``, plus ``pred_std`` / ``target_std`` ``[H]`` (mean per-day std, for the degeneracy guard).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"train.loss.type={loss_type!r}: expected one of {', '.join(LOSS_TYPES)}")
    pred, y = pred.float(), y.float()
    # B rows bound the day count (day < B) without reading day.max() back to the host (no sync in the
    # step); rows of absent days have count 0 and every per-day term is masked by day_ok (count >= 2)
    n_days = max(day.numel(), 1)
    z = standardise_per_day(y, mask, day, n_days) if y_norm is None else torch.where(mask, y_norm.float(), 0.0)
    corr, day_ok = per_day_corr(pred, z, mask, day, n_days)  # [n_days, H]
    corr_term = _masked_mean(1.0 - corr, day_ok)
    if pred_q is not None:
        point = _masked_mean(pinball(pred_q.float(), z, quantiles.to(z)), mask)
    elif loss_type == "mse":
        point = _masked_mean((pred - z) ** 2, mask)
    elif loss_type == "huber":
        point = _masked_mean(F.huber_loss(pred, z, reduction="none", delta=huber_delta), mask)
    elif loss_type == "ic":
        point = corr_term
    elif loss_type == "listnet":
        point = listnet(pred, z, mask, day, n_days, listnet_temperature)
    else:
        point = pairwise(pred, z, mask, day, n_days, pairs_per_sample)
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
