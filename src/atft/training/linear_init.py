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


def _rows(X: np.ndarray, d: int, stocks: np.ndarray, peers: Callable | None) -> np.ndarray:
    """Ridge inputs of the stocks ``stocks`` on day ``d``: ``[n, F]`` (own) or ``[n, 2F]`` (own, peers)."""
    own = X[d, stocks].astype(np.float64)  # [n, F]
    if peers is None:
        return own
    members, edge_index = peers(d)  # the day's batch members [n_d] and graph [2, E] over them
    pos = np.searchsorted(members, stocks)
    mean = neighbour_mean(torch.from_numpy(X[d, members].astype(np.float32)), edge_index)  # [n_d, F]
    return np.concatenate([own, mean.numpy()[pos].astype(np.float64)], axis=1)  # [n, 2F]


def ridge_fit(X: np.ndarray, ok: np.ndarray, Y_norm: np.ndarray, Y_mask: np.ndarray, days: np.ndarray,
              alpha: float = 1.0, seed: int = 0, max_rows: int = MAX_ROWS,
              peers: Callable[[int], tuple[np.ndarray, torch.Tensor]] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Ridge weights ``[F, H]`` (``[2F, H]`` with ``peers``: own rows, then peer rows) and intercepts ``[H]``.

    Args:
        X: ``[D, N, F]`` scaled features. ok: ``[D, N]`` usable samples. Y_norm: ``[D, N, H]`` training
        targets. Y_mask: ``[D, N, H]`` bool. days: training day indices. alpha: L2 penalty (default 1).
        peers: ``d -> (members [n_d] sorted panel indices, edge_index [2, E] into them)``, the day's
        training-batch graph (None: no peer features).
    """
    days = np.asarray(days)
    H = Y_norm.shape[2]
    F = X.shape[2] * (1 if peers is None else 2)
    weight, bias = np.zeros((F, H)), np.zeros(H)
    rng = np.random.default_rng(seed)
    for k in range(H):  # loop over horizons (<= 4)
        di, ni = np.nonzero(ok[days] & Y_mask[days, :, k])  # rows of the training block (sorted by day)
        if len(di) > max_rows:
            pick = np.sort(rng.choice(len(di), max_rows, replace=False))
            di, ni = di[pick], ni[pick]
        if len(di) < 2:
            continue
        sx, sxx, sy, sxy = np.zeros(F), np.zeros((F, F)), 0.0, np.zeros(F)
        bounds = np.flatnonzero(np.diff(di, prepend=-1, append=len(days) + 1))  # where each day's rows start
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):  # loop over training days
            d = int(days[di[a]])
            x = _rows(X, d, ni[a:b], peers)  # [n, F]
            y = Y_norm[d, ni[a:b], k].astype(np.float64)  # [n]
            sx += x.sum(0)
            sxx += x.T @ x
            sy += float(y.sum())
            sxy += x.T @ y
        n = len(di)
        mx, my = sx / n, sy / n
        gram = sxx - n * np.outer(mx, mx)  # Xc'Xc
        weight[:, k] = np.linalg.solve(gram + alpha * np.eye(F), sxy - n * mx * my)
        bias[k] = my - mx @ weight[:, k]
    return weight, bias
