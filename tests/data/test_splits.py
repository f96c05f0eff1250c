"""Date splits: embargo >= longest horizon, explicit dates, walk-forward folds."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from atft.data.splits import date_splits, walk_forward_splits
from atft.errors import InputError

DATES = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-01-01") + 100)


def _cfg(**kw):
    base = {"train_frac": 0.7, "val_frac": 0.15, "train_end": None, "val_end": None, "embargo_days": None}
    return OmegaConf.create({**base, **kw})


def test_fraction_splits_leave_an_embargo_of_the_longest_horizon():
    s = date_splits(DATES, _cfg(), max_horizon=20)
    # usable = 100 - 2 * 20 = 60 -> 42 train, 9 val, the rest test
    assert s.embargo == 20 and len(s.train) == 42 and len(s.val) == 9
    assert s.val[0] - s.train[-1] == 21 and s.test[0] - s.val[-1] == 21  # 20 dropped days between
    assert s.test[-1] == 99 and len(s.test) == 100 - 42 - 9 - 40
    # the last training day's 20-day target window ends before the first validation day
    assert s.train[-1] + 20 < s.val[0]


def test_explicit_dates_are_inclusive_ends():
    s = date_splits(DATES, _cfg(train_end="2024-02-09", val_end="2024-03-10", embargo_days=5), max_horizon=5)
    assert str(DATES[s.train[-1]]) == "2024-02-09" and str(DATES[s.val[-1]]) == "2024-03-10"
    assert s.val[0] == s.train[-1] + 6 and s.test[0] == s.val[-1] + 6


@pytest.mark.parametrize("cfg, msg", [
    (_cfg(embargo_days=3), "shorter than the longest horizon"),
    (_cfg(train_frac=0.9, val_frac=0.2), "sum below 1"),
    (_cfg(train_end="2024-02-01"), "must be given together"),
    (_cfg(train_end="2024-03-01", val_end="2024-02-01"), "must be after"),
    (_cfg(train_end="2024-01-02", val_end="2024-04-09"), "test split is empty"),
])
def test_bad_split_config_raises_input_error(cfg, msg):
    with pytest.raises(InputError, match=msg):
        date_splits(DATES, cfg, max_horizon=5)


def test_walk_forward_folds_expand_and_never_overlap():
    folds = walk_forward_splits(DATES, n_folds=3, max_horizon=5, val_frac=0.2)
    assert len(folds) == 3
    tests = [f.test for f in folds]
    assert all(a[-1] < b[0] for a, b in zip(tests, tests[1:]))  # consecutive test blocks
    assert tests[-1][-1] == 99
    for f in folds:
        assert f.train[0] == 0 and f.train[-1] + 5 < f.val[0] and f.val[-1] + 5 < f.test[0]
    assert len(folds[0].train) < len(folds[1].train) < len(folds[2].train)  # expanding window
    with pytest.raises(InputError, match="use fewer folds"):
        walk_forward_splits(DATES[:20], n_folds=5, max_horizon=5)


def test_walk_forward_on_a_one_year_panel_gives_over_100_out_of_sample_days():
    year = np.arange(np.datetime64("2009-08-21"), np.datetime64("2009-08-21") + 245)
    folds = walk_forward_splits(year, n_folds=3, max_horizon=20, val_frac=0.15)
    test_days = np.concatenate([f.test for f in folds])
    assert len(test_days) == len(np.unique(test_days)) >= 100  # vs 32 test days from the single 70/15/15 split
    assert test_days[0] == round(0.5 * 245) and test_days[-1] == 244
    for f in folds:  # every fold still has an embargo of the longest horizon on both sides of validation
        assert f.train[-1] + 20 < f.val[0] and f.val[-1] + 20 < f.test[0]
    with pytest.raises(InputError, match="walk_forward_initial_frac"):
        walk_forward_splits(year, n_folds=3, max_horizon=20, initial_frac=1.0)
