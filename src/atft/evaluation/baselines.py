"""Baselines on the same Panel and the same date splits as ATFT: LightGBM, Ridge, 20-day momentum and
5-day reversal.

LightGBM and Ridge see the features of the sample's last day only (no windows) and are fitted per
horizon on the training dates, with the target z-scored within each day (so the models learn the
cross-section, not the market's level); LightGBM stops early on the validation dates. Momentum is
the ``returns_20d`` feature, reversal is ``-returns_5d``; they need no fitting.
"""

from __future__ import annotations

import logging

import numpy as np

from atft.errors import InputError

log = logging.getLogger(__name__)

BASELINES = ("lightgbm", "ridge", "momentum_20d", "reversal_5d")
MAX_FIT_ROWS = 300_000  # seeded subsample of training rows beyond this, keeps CPU fits to seconds
SIGNAL_FEATURES = {"momentum_20d": ("returns_20d", 1.0), "reversal_5d": ("returns_5d", -1.0)}


def _zscore_per_day(y: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Cross-sectional z-score of ``y [D, N]`` over the valid stocks of each day (NaN elsewhere): the
    same per-day standardisation as ATFT's training targets."""
    from atft.training.targets import standardise_rows

    return np.where(valid, standardise_rows(y, valid), np.nan)


def _rows(panel, days: np.ndarray, k: int, rng: np.random.Generator, limit: int = MAX_FIT_ROWS):
    """Training rows ``(x [R, F], y [R])`` of the given days: valid stock-days with a known target."""
    days = np.asarray(days)
    y_all = panel.Y[days, :, k].astype(np.float64)  # [d, N]
    valid = panel.M[days] & np.isfinite(y_all)
    z = _zscore_per_day(y_all, valid & (valid.sum(1, keepdims=True) >= 2))
    di, ni = np.nonzero(valid & np.isfinite(z))
    if len(di) > limit:
        pick = np.sort(rng.choice(len(di), limit, replace=False))
        di, ni = di[pick], ni[pick]
    return np.asarray(panel.X[days[di], ni], dtype=np.float32), z[di, ni]  # float32 also from a half panel


def _predict_days(panel, days: np.ndarray, predict_fn) -> np.ndarray:
    """Apply ``predict_fn(x [R, F]) -> [R]`` to the valid stocks of ``days``. # [D, N] NaN elsewhere"""
    out = np.full(panel.M.shape, np.nan)
    days = np.asarray(days)
    di, ni = np.nonzero(panel.M[days])
    if len(di):
        out[days[di], ni] = predict_fn(np.asarray(panel.X[days[di], ni], dtype=np.float32))
    return out


def signal_baseline(panel, name: str) -> np.ndarray:
    """Momentum / reversal from a feature column, the same for every horizon. # [D, N, H]"""
    feature, sign = SIGNAL_FEATURES[name]
    if feature not in panel.feature_names:
        raise InputError(f"baseline {name} needs the feature column {feature!r}, which the dataset "
                         f"{panel.source} lacks")
    x = panel.X[..., panel.feature_names.index(feature)].astype(np.float64)  # [D, N]
    pred = np.where(panel.M, sign * x, np.nan)
    return np.repeat(pred[..., None], len(panel.horizons), axis=-1)


def ridge_baseline(panel, train_days: np.ndarray, predict_days: np.ndarray, alpha: float = 1.0,
                   seed: int = 0) -> np.ndarray:
    """Ridge regression per horizon on the last day's features. # [D, N, H], NaN outside predict_days"""
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(seed)
    out = np.full((*panel.M.shape, len(panel.horizons)), np.nan)
    for k in range(len(panel.horizons)):
        x, y = _rows(panel, train_days, k, rng)
        if len(y) < 2:
            raise InputError(f"ridge baseline: no training rows with target_{panel.horizons[k]}d")
        model = Ridge(alpha=alpha).fit(x, y)
        out[..., k] = _predict_days(panel, predict_days, model.predict)
    return out


def lightgbm_baseline(panel, train_days: np.ndarray, val_days: np.ndarray, predict_days: np.ndarray,
                      seed: int = 0, num_boost_round: int = 200, n_jobs: int = 2) -> np.ndarray:
    """LightGBM per horizon, early-stopped on the validation dates. # [D, N, H], NaN outside predict_days"""
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    params = {"objective": "regression", "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 50,
              "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
              "num_threads": n_jobs, "seed": seed, "verbose": -1, "deterministic": True}
    out = np.full((*panel.M.shape, len(panel.horizons)), np.nan)
    for k in range(len(panel.horizons)):
        x, y = _rows(panel, train_days, k, rng)
        xv, yv = _rows(panel, val_days, k, rng, limit=MAX_FIT_ROWS // 4)
        if len(y) < 2:
            raise InputError(f"lightgbm baseline: no training rows with target_{panel.horizons[k]}d")
        train_set = lgb.Dataset(x, y, free_raw_data=True)
        valid_sets = [lgb.Dataset(xv, yv, reference=train_set)] if len(yv) else []
        callbacks = [lgb.early_stopping(20, verbose=False)] if valid_sets else []
        booster = lgb.train(params, train_set, num_boost_round=num_boost_round, valid_sets=valid_sets,
                            callbacks=callbacks)
        out[..., k] = _predict_days(panel, predict_days, lambda a, b=booster: b.predict(
            a, num_iteration=b.best_iteration or None))
    return out


def baseline_predictions(name: str, panel, splits, seed: int = 0) -> np.ndarray:
    """Predictions ``[D, N, H]`` of one baseline on the test days of ``splits`` (NaN elsewhere)."""
    if name in SIGNAL_FEATURES:
        pred = signal_baseline(panel, name)
        keep = np.zeros(len(panel.dates), dtype=bool)
        keep[splits.test] = True
        return np.where(keep[:, None, None], pred, np.nan)
    if name == "ridge":
        return ridge_baseline(panel, splits.train, splits.test, seed=seed)
    if name == "lightgbm":
        return lightgbm_baseline(panel, splits.train, splits.val, splits.test, seed=seed)
    raise InputError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
