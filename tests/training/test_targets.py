"""Cross-sectional training targets: per day, blind to the market's level, robust to outliers."""

import numpy as np
import pytest

from atft.training.targets import cross_sectional_targets


def _panel(seed=0, D=6, N=40, H=2):
    rng = np.random.default_rng(seed)
    Y = rng.standard_normal((D, N, H)) * 0.02
    Y[2, 5, 0] = np.nan  # a missing target stays masked
    return Y, np.isfinite(Y)


@pytest.mark.parametrize("method", ["zscore", "rank_gauss"])
def test_each_day_has_mean_zero_unit_std_and_ignores_the_market_level(method):
    Y, mask = _panel()
    z = cross_sectional_targets(Y, mask, method)
    for d in range(Y.shape[0]):
        v = mask[d, :, 0]
        assert abs(z[d, v, 0].mean()) < 1e-6 and abs(z[d, v, 0].std() - 1.0) < 1e-5
    assert z[2, 5, 0] == 0.0
    shifted = Y.copy()
    shifted[3] += 0.05  # a 5% market-wide move on day 3 only
    assert np.allclose(cross_sectional_targets(shifted, mask, method), z, atol=1e-5)


def test_days_are_normalised_independently():
    Y, mask = _panel()
    z = cross_sectional_targets(Y, mask, "zscore")
    changed = Y.copy()
    changed[4:] = changed[4:] * 7 + 0.3  # the future changes wholesale
    z2 = cross_sectional_targets(changed, mask, "zscore")
    assert np.array_equal(z[:4], z2[:4])


def test_zscore_winsorises_an_outlier_and_rank_gauss_keeps_order():
    Y, mask = _panel(N=200)
    Y[0, 0, 0] = 5.0  # a +500% takeover jump
    z = cross_sectional_targets(Y, mask, "zscore", winsorize_sigma=3.0)
    plain = (Y[0, :, 0] - Y[0, :, 0].mean()) / Y[0, :, 0].std()
    assert z[0, 0, 0] < 4.0 < plain[0]  # clipped near 3 sigma, then re-standardised
    rest = np.corrcoef(z[0, 1:, 0], Y[0, 1:, 0])[0, 1]
    assert rest > 0.99  # the other 199 stocks keep their spread (plain z would squash them)
    g = cross_sectional_targets(Y, mask, "rank_gauss")
    order = np.argsort(Y[1, :, 1])
    assert np.all(np.diff(g[1, order, 1]) > 0)


def test_none_scales_by_one_global_std_of_the_scale_days():
    Y, mask = _panel()
    z = cross_sectional_targets(Y, mask, "none", scale_days=np.arange(3))
    scale = np.std(Y[:3, :, 0][mask[:3, :, 0]])
    assert np.allclose(z[..., 0][mask[..., 0]], (Y[..., 0] / scale)[mask[..., 0]], atol=1e-5)


def test_unknown_method_is_refused():
    Y, mask = _panel()
    with pytest.raises(ValueError, match="target_norm"):
        cross_sectional_targets(Y, mask, "minmax")
