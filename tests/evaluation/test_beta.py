"""Rolling beta uses only the days before each day; neutral returns remove the market exposure."""

import numpy as np
import pytest

from atft.evaluation.beta import beta_neutral_returns, market_returns, rolling_beta


def _panel(seed=0, d_count=120, n=10):
    rng = np.random.default_rng(seed)
    market = rng.normal(0, 0.01, size=d_count)
    betas = np.linspace(0.5, 1.5, n)
    idio = rng.normal(0, 0.001, size=(d_count, n))
    idio -= idio.mean(1, keepdims=True)  # so the equal-weight market is exactly mean(beta) * market
    return market, betas, market[:, None] * betas / betas.mean() + idio


def test_market_is_the_equal_weight_mean_of_valid_stocks():
    r = np.array([[0.01, 0.03, np.nan], [0.02, 0.04, 0.06]])
    valid = np.array([[True, True, True], [True, True, False]])
    np.testing.assert_allclose(market_returns(r, valid), [0.02, 0.03])


def test_rolling_beta_recovers_betas_and_defaults_to_one_without_history():
    _, betas, r = _panel()
    beta = rolling_beta(r, window=60, min_obs=20)
    np.testing.assert_allclose(beta[:20], 1.0)  # fewer than min_obs past days
    np.testing.assert_allclose(beta[80], betas / betas.mean(), atol=0.05)


def test_beta_of_a_day_ignores_that_day_and_later():
    _, _, r = _panel()
    changed = r.copy()
    changed[70:] *= -3.0
    np.testing.assert_array_equal(rolling_beta(r)[:71], rolling_beta(changed)[:71])


def test_beta_matches_an_explicit_ols_over_the_trailing_window():
    _, _, r = _panel(seed=1)
    mkt = market_returns(r)
    t, w = 50, 30
    ref = np.polyfit(mkt[t - w:t], r[t - w:t, 3], 1)[0]
    assert rolling_beta(r, window=w, min_obs=10)[t, 3] == pytest.approx(ref)


def test_neutral_returns_strip_the_market():
    market, _, r = _panel(seed=2)
    neutral = beta_neutral_returns(r)
    late = slice(70, None)
    raw_corr = np.corrcoef(r[late, 0], market[late])[0, 1]
    neutral_corr = np.corrcoef(neutral[late, 0], market[late])[0, 1]
    assert raw_corr > 0.9 and abs(neutral_corr) < 0.3
