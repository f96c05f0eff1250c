"""Date-based splits with an embargo: train | gap | validation | gap | test.

Splits are by **date**, globally (every stock shares the boundaries). Between two splits ``embargo``
trading days are dropped; with ``embargo >= max horizon`` the target window ``(t, t+h]`` of the last
training day ends before the first validation day, so no target crosses a boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atft.config import cfg_get
from atft.errors import InputError


@dataclass(frozen=True)
class Splits:
    """Day indices (into the panel's sorted dates) of each split, and the embargo used."""

    train: np.ndarray  # [D_train] int64, ascending
    val: np.ndarray  # [D_val]
    test: np.ndarray  # [D_test]
    embargo: int

    def describe(self, dates: np.ndarray) -> dict:
        """First/last date and day count of each split (for logs and the run record)."""
        out = {"embargo_days": self.embargo}
        for name in ("train", "val", "test"):
            idx = getattr(self, name)
            out[name] = {"days": len(idx), "first": str(dates[idx[0]]) if len(idx) else None,
                         "last": str(dates[idx[-1]]) if len(idx) else None}
        return out


def resolve_embargo(embargo_days, max_horizon: int) -> int:
    embargo = max_horizon if embargo_days is None else int(embargo_days)
    if embargo < max_horizon:
        raise InputError(f"data.split.embargo_days={embargo} is shorter than the longest horizon "
                         f"{max_horizon}d; targets would cross split boundaries")
    return embargo


def _block(start: int, stop: int) -> np.ndarray:
    return np.arange(start, max(start, stop), dtype=np.int64)


def _explicit(dates: np.ndarray, train_end, val_end, embargo: int) -> Splits:
    try:
        t_end, v_end = np.datetime64(str(train_end), "D"), np.datetime64(str(val_end), "D")
    except ValueError:
        raise InputError(f"data.split.train_end={train_end!r} / val_end={val_end!r}: expected YYYY-MM-DD") from None
    if v_end <= t_end:
        raise InputError(f"data.split.val_end={val_end} must be after data.split.train_end={train_end}")
    n_train = int(np.searchsorted(dates, t_end, side="right"))
    n_to_val = int(np.searchsorted(dates, v_end, side="right"))
    return Splits(_block(0, n_train), _block(n_train + embargo, n_to_val),
                  _block(n_to_val + embargo, len(dates)), embargo)


def _fractions(n_days: int, train_frac: float, val_frac: float, embargo: int) -> Splits:
    if not (0 < train_frac < 1 and 0 < val_frac < 1 and train_frac + val_frac < 1):
        raise InputError(f"data.split train_frac={train_frac}, val_frac={val_frac}: expected both in (0, 1) "
                         f"with a sum below 1 (the rest is the test split)")
    usable = n_days - 2 * embargo  # the two embargo gaps are taken out before the fractions
    n_train, n_val = int(train_frac * usable), int(val_frac * usable)
    start_val = n_train + embargo
    start_test = start_val + n_val + embargo
    return Splits(_block(0, n_train), _block(start_val, start_val + n_val), _block(start_test, n_days), embargo)


def date_splits(dates: np.ndarray, split_cfg, max_horizon: int) -> Splits:
    """Train / validation / test day indices from ``cfg.data.split``.

    Args:
        dates: ``[D]`` sorted trading days.
        split_cfg: ``train_frac`` (0.7), ``val_frac`` (0.15), or explicit ``train_end`` / ``val_end``
            (YYYY-MM-DD, inclusive), and ``embargo_days`` (None -> ``max_horizon``).
        max_horizon: longest target horizon in days.
    """
    embargo = resolve_embargo(cfg_get(split_cfg, "embargo_days"), max_horizon)
    train_end, val_end = cfg_get(split_cfg, "train_end"), cfg_get(split_cfg, "val_end")
    if (train_end is None) != (val_end is None):
        raise InputError("data.split.train_end and data.split.val_end must be given together (or neither)")
    if train_end is not None:
        splits = _explicit(np.asarray(dates).astype("datetime64[D]"), train_end, val_end, embargo)
    else:
        splits = _fractions(len(dates), float(cfg_get(split_cfg, "train_frac", 0.7)),
                            float(cfg_get(split_cfg, "val_frac", 0.15)), embargo)
    for name in ("train", "val", "test"):
        if len(getattr(splits, name)) == 0:
            raise InputError(f"the {name} split is empty ({len(dates)} days, embargo {embargo}); use more "
                             f"dates or change data.split")
    return splits


def walk_forward_splits(dates: np.ndarray, n_folds: int, max_horizon: int, val_frac: float = 0.15,
                        embargo_days: int | None = None, initial_frac: float = 0.5) -> list[Splits]:
    """Expanding-window (rolling-origin) folds over the last ``1 - initial_frac`` of the dates.

    The first ``initial_frac`` of the days is the initial history (a one-year panel's long-window features
    are still warming up early on, so equal blocks from day 0 would train on almost nothing); the rest is
    cut into ``n_folds`` consecutive test blocks. For fold ``k`` everything before its test block (minus
    an embargo) is train + validation, the validation part being its last ``val_frac`` share; gaps of
    ``embargo`` days separate all three. The test blocks together cover every day after the initial history.
    """
    if n_folds < 1:
        raise InputError(f"--folds {n_folds}: expected at least 1")
    if not 0.0 < initial_frac < 1.0:
        raise InputError(f"data.split.walk_forward_initial_frac={initial_frac}: expected a value in (0, 1)")
    embargo = resolve_embargo(embargo_days, max_horizon)
    n_days = len(dates)
    first_test = int(round(initial_frac * n_days))
    edges = np.linspace(first_test, n_days, n_folds + 1).round().astype(int)  # test block boundaries
    folds = []
    for start_test, stop_test in zip(edges[:-1], edges[1:]):
        pre = start_test - embargo  # days usable for train + validation
        n_val = max(1, int(val_frac * pre))
        n_train = pre - n_val - embargo
        if n_train < 1 or stop_test <= start_test:
            raise InputError(f"{n_folds} walk-forward folds do not fit {n_days} days with embargo {embargo}; "
                             f"use fewer folds")
        folds.append(Splits(_block(0, n_train), _block(n_train + embargo, pre),
                            _block(int(start_test), int(stop_test)), embargo))
    return folds
