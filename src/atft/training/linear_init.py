"""The ridge warm start of ATFT's linear paths: a per-day-normalised Ridge on the training days.

For each horizon, the rows are the training stock-days with a target; the inputs are the sample's last
day of scaled features (what ``LinearPath`` reads, and what the Ridge baseline reads) and, with the peer
path on, also the mean of the same row over the stock's day-graph neighbours (what ``PeerPath`` reads,
computed by the same ``neighbour_mean`` on the same training-batch graph); the output is the
cross-sectional training target the loss uses (``atft.training.targets``). The fit is the closed form
``W = (Xc'Xc + alpha I)^-1 Xc'yc`` on centred rows, with ``b = mean(y) - mean(x) W`` (the intercept is not
penalised, as in scikit-learn's ``Ridge``). ``Xc'Xc`` is accumulated day by day from sums of ``x`` and
``x x'``, so memory is ``[F, F]`` plus one day's rows, not ``[R, F]``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from atft.model import neighbour_mean

MAX_ROWS = 300_000  # seeded row subsample beyond this: the solution is stable long before
FOLDS = 5  # blocked cross-validation folds of the peer block's admission
MAX_PEER_ROWS = 200_000  # with the peer block: whole days up to about this many rows (one graph per day)


def _rows(X: np.ndarray, d: int, stocks: np.ndarray, peers: Callable | None) -> np.ndarray:
    """Ridge inputs of the stocks ``stocks`` on day ``d``: ``[n, F]`` (own) or ``[n, 2F]`` (own, peers)."""
    own = X[d, stocks].astype(np.float64)  # [n, F]
    if peers is None:
        return own
    members, edge_index = peers(d)  # the day's batch members [n_d] and graph [2, E] over them
    pos = np.searchsorted(members, stocks)
    mean = neighbour_mean(torch.from_numpy(X[d, members].astype(np.float32)), edge_index)  # [n_d, F]
    return np.concatenate([own, mean.numpy()[pos].astype(np.float64)], axis=1)  # [n, 2F]


def _sample(ok: np.ndarray, Y_mask: np.ndarray, days: np.ndarray, rng, max_rows: int, whole_days: bool
            ) -> np.ndarray:
    """``[len(days), N, H]`` bool: the rows each horizon's fit uses. ``whole_days``: every row of a seeded
    subset of days holding about ``max_rows`` rows (each sampled day then needs one graph); else a seeded
    subsample of ``max_rows`` rows per horizon."""
    take = ok[days][..., None] & Y_mask[days]  # [Dt, N, H]
    if whole_days:
        per_day = take.any(-1).sum(1)  # [Dt]
        order = rng.permutation(len(days))
        keep = order[: max(1, int(np.searchsorted(np.cumsum(per_day[order]), max_rows, side="right")))]
        chosen = np.zeros(len(days), bool)
        chosen[keep] = True
        return take & chosen[:, None, None]
    for k in range(take.shape[2]):  # loop over horizons (<= 4)
        di, ni = np.nonzero(take[..., k])
        if len(di) > max_rows:
            drop = rng.choice(len(di), len(di) - max_rows, replace=False)
            take[di[drop], ni[drop], k] = False
    return take


def _solve(n, sx, sxx, sy, sxy, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge from sufficient statistics: ``W = (Xc'Xc + alpha I)^-1 Xc'yc``, ``b = mean(y) - mean(x) W``."""
    mx, my = sx / n, sy / n
    gram = sxx - n * np.outer(mx, mx)  # Xc'Xc
    w = np.linalg.solve(gram + alpha * np.eye(len(sx)), sxy - n * mx * my)
    return w, float(my - mx @ w)


def _daily_ic(pred: np.ndarray, y: np.ndarray) -> float:
    if len(y) < 3 or pred.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(pred, y)[0, 1])


def ridge_fit(X: np.ndarray, ok: np.ndarray, Y_norm: np.ndarray, Y_mask: np.ndarray, days: np.ndarray,
              alpha: float = 1.0, seed: int = 0, max_rows: int = MAX_ROWS,
              peers: Callable[[int], tuple[np.ndarray, torch.Tensor]] | None = None,
              max_peer_rows: int = MAX_PEER_ROWS, peer_margin_se: float = 2.0, folds: int = FOLDS
              ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Ridge weights ``[F, H]`` (``[2F, H]`` with ``peers``: own rows, then peer rows), intercepts ``[H]`` and
    a record of the peer block's admission (``{}`` without peers).

    Args:
        X: ``[D, N, F]`` scaled features. ok: ``[D, N]`` usable samples. Y_norm: ``[D, N, H]`` training
        targets. Y_mask: ``[D, N, H]`` bool. days: training day indices. alpha: L2 penalty (default 1).
        peers: ``d -> (members [n_d] sorted panel indices, edge_index [2, E] into them)``, the day's
        training-batch graph (None: no peer features). With peers the rows are whole days, about
        ``max_peer_rows`` of them (a day's graph costs a correlation matrix and a top-k, ~0.2 s at 4,000
        stocks, so start-up stays short; they are cached for the first epoch).
        peer_margin_se: the peer block is kept only if, in ``folds``-fold blocked cross-validation over
            the sampled training days (contiguous blocks of days; each block predicted by the ridge fitted
            on the others), its daily IC at the first horizon beats the own-features ridge's by more than
            this many HAC SE of the paired daily difference; otherwise its weights are 0 and the own block
            is the own-features ridge. 0: always kept. The rule of the selection margin
            (``train.checkpoint.init_margin_se``): the larger model must earn its place on held-out days.
    """
    days = np.asarray(days)
    H = Y_norm.shape[2]
    F0 = X.shape[2]
    F = F0 * (1 if peers is None else 2)
    rng = np.random.default_rng(seed)
    take = _sample(ok, Y_mask, days, rng, max_rows if peers is None else max_peer_rows, peers is not None)
    sampled = np.flatnonzero(take.any((1, 2)))  # sampled training days (positions in ``days``), in time order
    block = np.minimum(np.arange(len(sampled)) * folds // max(len(sampled), 1), folds - 1)  # [len(sampled)]
    n, sx, sxx = np.zeros(H), np.zeros((H, F)), np.zeros((H, F, F))
    sy, sxy = np.zeros(H), np.zeros((H, F))
    cv = peers is not None and peer_margin_se > 0
    # per block, the first horizon's statistics (for the cross-validation of the peer block)
    bn, bsx, bsxx, bsy, bsxy = (np.zeros(folds), np.zeros((folds, F)), np.zeros((folds, F, F)) if cv else None,
                                np.zeros(folds), np.zeros((folds, F)))
    for j, b in zip(sampled, block, strict=True):  # loop over the sampled training days
        stocks = np.flatnonzero(take[j].any(-1))
        x = _rows(X, int(days[j]), stocks, peers)  # [n, F]
        for k in range(H):  # loop over horizons (<= 4)
            m = take[j, stocks, k]
            xk, yk = x[m], Y_norm[days[j], stocks[m], k].astype(np.float64)
            gram, cross = xk.T @ xk, xk.T @ yk
            n[k] += len(yk)
            sx[k] += xk.sum(0)
            sxx[k] += gram
            sy[k] += float(yk.sum())
            sxy[k] += cross
            if cv and k == 0:
                bn[b] += len(yk)
                bsx[b] += xk.sum(0)
                bsxx[b] += gram
                bsy[b] += float(yk.sum())
                bsxy[b] += cross
    info: dict = {}
    if cv:
        info = _peer_cv(X, Y_norm, days, take, sampled, block, peers, (n[0], sx[0], sxx[0], sy[0], sxy[0]),
                        (bn, bsx, bsxx, bsy, bsxy), alpha, F0)
        info["kept"] = bool(np.isfinite(info["se"]) and info["diff"] > peer_margin_se * info["se"])
    elif peers is not None:
        info = {"kept": True}
    keep = slice(None) if peers is None or info["kept"] else slice(0, F0)  # the own block alone when dropped
    weight, bias = np.zeros((F, H)), np.zeros(H)
    for k in range(H):  # loop over horizons (<= 4)
        if n[k] < 2:
            continue
        weight[keep, k], bias[k] = _solve(n[k], sx[k][keep], sxx[k][keep, keep], sy[k], sxy[k][keep], alpha)
    return weight, bias, info


def _peer_cv(X, Y_norm, days, take, sampled, block, peers, total, per_block, alpha: float, F0: int) -> dict:
    """Blocked cross-validation of the peer block at the first horizon: ``{"diff", "se", "days"}``, the mean
    daily IC of own+peers minus own features on held-out days and its HAC SE (``ridge_fit``)."""
    from atft.evaluation.hac import hac_se

    n, sx, sxx, sy, sxy = total
    bn, bsx, bsxx, bsy, bsxy = per_block
    own = slice(0, F0)
    fits = {}
    for b in range(len(bn)):  # loop over folds (5)
        if n - bn[b] < 2 or bn[b] == 0:
            continue
        rest = (n - bn[b], sx - bsx[b], sxx - bsxx[b], sy - bsy[b], sxy - bsxy[b])
        full = _solve(*rest, alpha)
        alone = _solve(rest[0], rest[1][own], rest[2][own, own], rest[3], rest[4][own], alpha)
        fits[b] = (full, alone)
    diffs = []
    for j, b in zip(sampled, block, strict=True):  # loop over the sampled training days, each held out once
        if b not in fits:
            continue
        stocks = np.flatnonzero(take[j, :, 0])
        x = _rows(X, int(days[j]), stocks, peers)  # [n, 2F]
        y = Y_norm[days[j], stocks, 0].astype(np.float64)
        (wf, cf), (wo, co) = fits[b]
        diffs.append(_daily_ic(x @ wf + cf, y) - _daily_ic(x[:, own] @ wo + co, y))
    diffs = np.asarray(diffs, np.float64)
    finite = diffs[np.isfinite(diffs)]
    if len(finite) < 3:
        return {"diff": float("nan"), "se": float("nan"), "days": int(len(finite))}
    return {"diff": float(finite.mean()), "se": float(hac_se(diffs, 1)), "days": int(len(finite))}
