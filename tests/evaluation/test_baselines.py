"""Baselines on the same Panel and splits: signal baselines are the feature, fitted ones find the signal."""

import numpy as np
import pytest

from atft.config import load_config
from atft.data.panel import load_panel
from atft.errors import InputError
from atft.evaluation.baselines import baseline_predictions, signal_baseline
from atft.evaluation.metrics import evaluate_predictions


@pytest.fixture
def panel(contract_dataset):
    return load_panel(contract_dataset, load_config([f"data.path={contract_dataset}"]).data)


def _test_metrics(panel, pred):
    test = panel.splits.test
    return evaluate_predictions(pred[test], panel.Y[test], panel.Y_mask[test], panel.horizons)


def test_signal_baselines_are_the_feature_with_its_sign(panel):
    mom = signal_baseline(panel, "momentum_20d")
    rev = signal_baseline(panel, "reversal_5d")
    x20 = panel.X[..., panel.feature_names.index("returns_20d")]
    x5 = panel.X[..., panel.feature_names.index("returns_5d")]
    ok = panel.M
    np.testing.assert_allclose(mom[..., 0][ok], x20[ok])
    np.testing.assert_allclose(rev[..., 1][ok], -x5[ok])
    assert np.isnan(mom[..., 0][~ok]).all()


def test_fitted_baselines_find_the_planted_signal_only_on_test_days(panel):
    for name in ("ridge", "lightgbm"):
        pred = baseline_predictions(name, panel, panel.splits, seed=0)
        outside = np.setdiff1d(np.arange(len(panel.dates)), panel.splits.test)
        assert np.isnan(pred[outside]).all()
        assert _test_metrics(panel, pred)["1d"]["rank_ic"] > 0.15, name


def test_unknown_baseline_and_missing_feature_are_refused(panel):
    with pytest.raises(InputError, match="unknown baseline"):
        baseline_predictions("prophet", panel, panel.splits)
    panel.feature_names[panel.feature_names.index("returns_20d")] = "ret20"
    with pytest.raises(InputError, match="returns_20d"):
        signal_baseline(panel, "momentum_20d")
