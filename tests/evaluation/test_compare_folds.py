"""``compare --folds``: each fold's baselines see a panel scaled and screened on that fold's training days."""

import numpy as np
import polars as pl
import pytest

import atft.data.panel as panel_module
import atft.evaluation.compare as compare_module
from atft.evaluation.compare import compare


@pytest.fixture
def spies(monkeypatch):
    """Record every ``load_panel`` (fit_days, panel) and every baseline call (name, seed, panel, split)."""
    loads, calls = [], []
    real_load, real_baseline = panel_module.load_panel, compare_module.baseline_predictions

    def load_panel(*args, fit_days=None, **kwargs):
        panel = real_load(*args, fit_days=fit_days, **kwargs)
        loads.append((None if fit_days is None else np.asarray(fit_days).copy(), panel))
        return panel

    def baseline_predictions(name, panel, split, seed=0):
        calls.append((name, seed, panel, split))
        return real_baseline(name, panel, split, seed=seed)

    monkeypatch.setattr(panel_module, "load_panel", load_panel)
    monkeypatch.setattr(compare_module, "baseline_predictions", baseline_predictions)
    return loads, calls


def test_fold_baselines_use_a_panel_fitted_on_the_fold_training_days(tmp_path, contract_dataset, spies):
    loads, calls = spies
    board = compare(contract_dataset, seeds=2, out=tmp_path / "cmp", folds=2, models="ridge,lightgbm,momentum_20d")
    assert board["models_run"] == ["ridge", "lightgbm", "momentum_20d"] and board["folds"] == 2
    assert len(loads) == 3 and loads[0][0] is None  # the common panel, then one panel per fold
    common = loads[0][1]
    splits = [split for _, _, _, split in calls]
    folds = list({id(s): s for s in splits}.values())
    assert len(folds) == 2 and folds[0].test[-1] < folds[1].test[0]
    # ridge and momentum once, lightgbm per seed: 4 calls per fold, all on that fold's one refitted panel
    assert sorted((n, s) for n, s, _, sp in calls if sp is folds[0]) == [
        ("lightgbm", 0), ("lightgbm", 1), ("momentum_20d", 0), ("ridge", 0)]
    for k, split in enumerate(folds):
        fit_days, fitted = loads[1 + k]
        np.testing.assert_array_equal(fit_days, split.train)
        assert fit_days.max() < split.val[0] < split.test[0]
        assert all(p is fitted for _, _, p, sp in calls if sp is split)
    # the common panel's scaler was fitted on the config's split, which reaches past fold 0's training block
    assert common.splits.train[-1] >= folds[0].val[0]
    assert not np.allclose(loads[1][1].scaler.center, common.scaler.center)


def test_fold_baselines_do_not_see_features_after_the_fold_training_block(tmp_path, contract_dataset, spies):
    """Shifting a feature after fold 0's training days changes the common scaler, not fold 0's one."""
    loads, calls = spies
    data = tmp_path / "tiny.parquet"
    frame = pl.read_parquet(contract_dataset)
    frame.write_parquet(data)
    compare(data, out=tmp_path / "a", folds=2, models="ridge")
    fold0_train_end = calls[0][3].train[-1]
    cut = loads[0][1].dates[fold0_train_end + 1]
    later = pl.col("Date") >= pl.lit(cut).cast(pl.Date)
    frame.with_columns(pl.when(later).then(pl.col("f_noise") + 50).otherwise(pl.col("f_noise"))
                       .alias("f_noise")).write_parquet(data)
    compare(data, out=tmp_path / "b", folds=2, models="ridge")
    (_, common_a), (_, fold0_a), _, (_, common_b), (_, fold0_b), _ = loads
    f = common_a.feature_names.index("f_noise")
    assert abs(common_b.scaler.center[f] - common_a.scaler.center[f]) > 1.0  # the old, leaky fit moves
    np.testing.assert_array_equal(fold0_a.scaler.center, fold0_b.scaler.center)
    np.testing.assert_array_equal(fold0_a.scaler.scale, fold0_b.scaler.scale)
    days = calls[0][3].train
    np.testing.assert_array_equal(fold0_a.X[days], fold0_b.X[days])


def test_single_split_reuses_the_common_panel(tmp_path, contract_dataset, spies):
    loads, calls = spies
    compare(contract_dataset, out=tmp_path / "cmp", models="ridge,momentum_20d")
    assert len(loads) == 1 and loads[0][0] is None
    assert [n for n, *_ in calls] == ["ridge", "momentum_20d"]
    assert all(p is loads[0][1] and sp is p.splits for _, _, p, sp in calls)
