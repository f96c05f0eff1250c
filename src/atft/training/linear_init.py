"""The ridge warm start of ATFT's linear path: a per-day-normalised Ridge on the training days.

For each horizon, the rows are the training stock-days with a target; the inputs are the sample's last
day of scaled features (what ``LinearPath`` reads, and what the Ridge baseline reads) and the output is
the cross-sectional training target the loss uses (``atft.training.targets``). The fit is the closed
form ``W = (Xc'Xc + alpha I)^-1 Xc'yc`` on centred rows, with ``b = mean(y) - mean(x) W`` (the intercept
is not penalised, as in scikit-learn's ``Ridge``).
"""

from __future__ import annotations

import numpy as np

MAX_ROWS = 300_000  # seeded row subsample beyond this: the solution is stable long before


def ridge_fit(X: np.ndarray, ok: np.ndarray, Y_norm: np.ndarray, Y_mask: np.ndarray, days: np.ndarray,
              alpha: float = 1.0, seed: int = 0, max_rows: int = MAX_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Ridge weights ``[F, H]`` and intercepts ``[H]`` from the rows of ``days``.

    Args:
        X: ``[D, N, F]`` scaled features. ok: ``[D, N]`` usable samples. Y_norm: ``[D, N, H]`` training
        targets. Y_mask: ``[D, N, H]`` bool. days: training day indices. alpha: L2 penalty (default 1).
    """
    days = np.asarray(days)
    F, H = X.shape[2], Y_norm.shape[2]
    weight, bias = np.zeros((F, H)), np.zeros(H)
    rng = np.random.default_rng(seed)
    for k in range(H):  # loop over horizons (<= 4)
        di, ni = np.nonzero(ok[days] & Y_mask[days, :, k])  # rows of the training block
        if len(di) > max_rows:
            pick = np.sort(rng.choice(len(di), max_rows, replace=False))
            di, ni = di[pick], ni[pick]
        if len(di) < 2:
            continue
        x = X[days[di], ni].astype(np.float64)  # [R, F]
        y = Y_norm[days[di], ni, k].astype(np.float64)  # [R]
        mx, my = x.mean(0), y.mean()
        x -= mx  # centred in place: at 600 features one [R, F] float64 copy is ~1 GB
        weight[:, k] = np.linalg.solve(x.T @ x + alpha * np.eye(F), x.T @ (y - my))
        bias[k] = my - mx @ weight[:, k]
    return weight, bias
