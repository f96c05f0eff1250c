"""Metric definitions against hand computations, reference loops and statistical invariants."""

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from atft.evaluation.metrics import (
    annualised_return,
    daily_ic,
    daily_rank_ic,
    drawdown,
    evaluate_predictions,
    hit_rate,
    ic_summary,
    lag_days,
    long_short_returns,
    max_drawdown,
    quantile_weights,
    sharpe,
    sharpe_se,
    staggered_weights,
)


def test_daily_ic_hand_computed():
    # dx = [-2,-1,0,1,2], dy = [-2,0,-1,2,1] -> cov 8, vx = vy = 10 -> 0.8
    pred = np.array([[1.0, 2, 3, 4, 5], [1, 2, 3, 4, 5]])
    target = np.array([[1.0, 3, 2, 5, 4], [5, 4, 3, 2, 1]])
    np.testing.assert_allclose(daily_ic(pred, target), [0.8, -1.0])
    np.testing.assert_allclose(daily_rank_ic(pred, target), [0.8, -1.0])


def test_rank_ic_average_ranks_for_ties():
    # pred ranks [1.5, 1.5, 3, 4, 5] vs [1..5]: cov 9.5, vx 9.5, vy 10
    pred = np.array([[1.0, 1, 2, 3, 4]])
    target = np.array([[1.0, 2, 3, 4, 5]])
    assert daily_rank_ic(pred, target)[0] == pytest.approx(9.5 / math.sqrt(95.0))
    assert daily_rank_ic(pred, target)[0] == pytest.approx(spearmanr(pred[0], target[0])[0])


def test_rank_ic_is_pearson_of_ranks_not_of_values():
    pred = np.array([[1.0, 2, 3, 4, 100]])
    target = np.array([[1.0, 2, 3, 4, 5]])
    assert daily_rank_ic(pred, target)[0] == pytest.approx(1.0)
    assert daily_ic(pred, target)[0] < 0.8


def test_mask_nan_and_min_stocks():
    pred = np.array([[1.0, 2, 3, 4, 5, 99], [1, 2, 3, 4, 5, 6]])
    target = np.array([[1.0, 3, 2, 5, 4, -99], [1, 2, 3, np.nan, 5, 6]])
    mask = np.array([[True] * 5 + [False], [True] * 6])
    ic = daily_ic(pred, target, mask)
    assert ic[0] == pytest.approx(0.8)  # the masked outlier is ignored
    assert ic[1] == pytest.approx(1.0)  # the NaN target is ignored, 5 stocks left
    assert np.isnan(daily_ic(pred, target, mask, min_stocks=6)).all()


def test_constant_prediction_scores_zero_and_constant_target_is_undefined():
    pred = np.array([[2.0] * 6, [1, 2, 3, 4, 5, 6]])
    target = np.array([[1.0, 2, 3, 4, 5, 6], [3.0] * 6])
    ic, ric = daily_ic(pred, target), daily_rank_ic(pred, target)
    assert ic[0] == 0.0 and ric[0] == 0.0
    assert np.isnan(ic[1]) and np.isnan(ric[1])


def test_vectorised_ic_matches_scipy_per_day():
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(7, 30)), rng.normal(size=(7, 30))
    target[rng.random((7, 30)) < 0.2] = np.nan
    for d in range(7):
        ok = np.isfinite(target[d])
        assert daily_ic(pred, target)[d] == pytest.approx(np.corrcoef(pred[d, ok], target[d, ok])[0, 1])
        assert daily_rank_ic(pred, target)[d] == pytest.approx(spearmanr(pred[d, ok], target[d, ok])[0])


def test_ic_summary_hand_computed():
    s = ic_summary(np.array([0.1, 0.3, np.nan, 0.2]))
    assert s["days"] == 3
    assert s["mean"] == pytest.approx(0.2)
    assert s["std"] == pytest.approx(0.1)
    assert s["icir"] == pytest.approx(2.0)
    # HAC, L = 2 lags: z = [-.1, .1, gap, 0]; g0 = .02/3, g1 = -.01/3 (the pair across the gap is lag 2,
    # z = 0); lrv = g0 + 2 (2/3) g1 = .02/9; fixed-b factor c = 1 - 1 + 1/3 with b = 3/3 -> se^2 = lrv / (3 c)
    assert s["lags"] == 2
    assert s["se"] == pytest.approx(math.sqrt(0.02 / 9))
    assert s["tstat"] == pytest.approx(0.2 / math.sqrt(0.02 / 9))


def test_long_short_one_day_book_and_costs_hand_computed():
    # 5 stocks, quintiles -> one stock per leg, weights +1 / -1
    pred = np.array([[5.0, 4, 3, 2, 1], [1, 2, 3, 4, 5]])
    rets = np.array([[0.01, 0, 0, 0, -0.02], [0.03, 0, 0, 0, 0.01]])
    out = long_short_returns(pred, rets, horizon=1, cost_bps=10.0)
    np.testing.assert_allclose(out["gross"], [0.01 + 0.02, 0.01 - 0.03])
    np.testing.assert_allclose(out["turnover"], [2.0, 4.0])  # build the book, then flip both legs
    np.testing.assert_allclose(out["net"], [0.03 - 2 * 0.001, -0.02 - 4 * 0.001])


def test_quantile_weights_legs_sum_to_plus_minus_one():
    rng = np.random.default_rng(1)
    w = quantile_weights(rng.normal(size=(4, 23)), np.ones((4, 23), bool), 0.2)
    np.testing.assert_allclose(np.where(w > 0, w, 0).sum(1), 1.0)
    np.testing.assert_allclose(np.where(w < 0, w, 0).sum(1), -1.0)
    assert ((w > 0).sum(1) == 4).all()  # floor(0.2 * 23)


def test_staggered_two_day_book_hand_computed():
    pred = np.array([[5.0, 4, 3, 2, 1], [1, 5, 4, 3, 2], [3, 3, 3, 3, 3]])  # day 2: constant -> flat
    rets = np.tile([0.01, 0.02, 0.03, 0.04, 0.05], (3, 1))
    out = long_short_returns(pred, rets, horizon=2)
    # W0 = .5*[1,0,0,0,-1]; W1 = .5*([1,0,0,0,-1] + [-1,1,0,0,0]); W2 = .5*([-1,1,0,0,0] + 0)
    np.testing.assert_allclose(out["gross"], [0.5 * (0.01 - 0.05), 0.5 * (0.02 - 0.05), 0.5 * (0.02 - 0.01)])
    np.testing.assert_allclose(out["turnover"], [1.0, 1.0, 1.0])


def _sub_book_reference(pred, rets, h, q=0.2):
    """Explicit loop: h sub-books, book j rebalances when t % h == j; average of their daily returns."""
    one_day = quantile_weights(pred, np.isfinite(pred), q)
    d_count = pred.shape[0]
    daily = np.zeros(d_count)
    for t in range(d_count):
        for j in range(h):
            rebal = [s for s in range(t + 1) if s % h == j]
            if rebal:
                daily[t] += (one_day[rebal[-1]] * rets[t]).sum() / h
    return daily


@pytest.mark.parametrize("h", [1, 3, 5])
def test_staggered_book_equals_explicit_sub_books(h):
    rng = np.random.default_rng(h)
    pred, rets = rng.normal(size=(17, 12)), rng.normal(0, 0.01, size=(17, 12))
    out = long_short_returns(pred, rets, horizon=h)
    np.testing.assert_allclose(out["gross"], _sub_book_reference(pred, rets, h), atol=1e-15)


def test_staggered_book_has_full_exposure_once_all_sub_books_are_built():
    rng = np.random.default_rng(2)
    w = staggered_weights(quantile_weights(rng.normal(size=(12, 20)), np.ones((12, 20), bool)), 5)
    assert np.abs(w[:4]).sum(1).max() < 2.0 - 1e-9  # sub-books still being built
    np.testing.assert_allclose(w[4:].sum(1), 0.0, atol=1e-12)  # dollar neutral


def test_return_statistics_hand_computed():
    r = np.array([0.01, -0.01, 0.02, 0.0, np.nan])
    std = math.sqrt((0.005**2 + 0.015**2 + 0.015**2 + 0.005**2) / 3)
    assert sharpe(r) == pytest.approx(math.sqrt(252) * 0.005 / std)
    assert annualised_return(r) == pytest.approx(252 * 0.005)
    assert hit_rate(r) == pytest.approx(0.5)
    assert max_drawdown(np.array([0.1, -0.5, 0.2])) == pytest.approx(-0.5)
    np.testing.assert_allclose(drawdown(np.array([-0.1, 0.05])), [-0.1, 0.9 * 1.05 - 1])
    assert sharpe_se(0.0, 42) == pytest.approx(math.sqrt(252 / 42))  # ~2.45, the warning


def test_perfect_foresight_is_the_maximum():
    rng = np.random.default_rng(3)
    target = rng.normal(0, 0.02, size=(20, 50))
    best = long_short_returns(target, target)["gross"]
    assert daily_rank_ic(target, target) == pytest.approx(np.ones(20))
    for _ in range(50):
        other = long_short_returns(rng.normal(size=(20, 50)), target)["gross"]
        assert (best >= other - 1e-15).all()


def test_random_predictions_have_ic_within_its_standard_error():
    rng = np.random.default_rng(4)
    d_count, n = 250, 100
    target = rng.normal(size=(d_count, n))
    s = ic_summary(daily_rank_ic(rng.normal(size=(d_count, n)), target))
    assert abs(s["mean"]) < 3 * s["se"]
    assert s["se"] == pytest.approx(1 / math.sqrt((n - 1) * d_count), rel=0.15)  # null SE of Spearman


@pytest.mark.parametrize("h", [1, 5])
def test_sign_flip_flips_the_long_short_return(h):
    rng = np.random.default_rng(5)
    pred, rets = rng.normal(size=(30, 25)), rng.normal(0, 0.01, size=(30, 25))
    a = long_short_returns(pred, rets, horizon=h, cost_bps=5)
    b = long_short_returns(-pred, rets, horizon=h, cost_bps=5)
    np.testing.assert_allclose(b["gross"], -a["gross"], atol=1e-15)
    np.testing.assert_allclose(b["turnover"], a["turnover"])


def test_evaluate_predictions_keys_and_return_fallbacks():
    rng = np.random.default_rng(6)
    target = rng.normal(0, 0.02, size=(40, 30, 2))
    pred = target + rng.normal(0, 0.02, size=target.shape)
    res = evaluate_predictions(pred, target, None, [1, 5], cost_bps=10)
    assert set(res) == {"1d", "5d"}
    # lag 1 by default: the signal of day t is held over target_1d of day t + 1
    ls5 = long_short_returns(lag_days(pred[..., 1], 1), target[..., 0], horizon=5, cost_bps=10)
    assert res["5d"]["sharpe_net"] == pytest.approx(sharpe(ls5["net"][1:]))
    assert res["5d"]["lag"] == 1 and res["5d"]["ls_days"] == 39
    assert res["1d"]["rank_ic"] == pytest.approx(np.mean(daily_rank_ic(pred[..., 0], target[..., 0])))
    assert res["1d"]["days"] == 40 and res["1d"]["cost_bps"] == 10.0
    only5 = evaluate_predictions(pred[..., 1:], target[..., 1:], None, [5])
    ls = long_short_returns(lag_days(pred[..., 1], 1), target[..., 1] / 5, horizon=5)  # no 1d: target_5d / 5
    assert only5["5d"]["sharpe"] == pytest.approx(sharpe(ls["gross"][1:]))
    with pytest.raises(ValueError, match="must be"):
        evaluate_predictions(pred, target, None, [1])


def test_quantile_mean_returns_hand_computed():
    from atft.evaluation.metrics import quantile_mean_returns

    # 10 stocks, 5 bins of 2; day 1 reverses the order of the targets
    pred = np.tile(np.arange(10.0), (2, 1))
    target = np.vstack([np.arange(10.0), np.arange(10.0)[::-1]])
    mean, se, days = quantile_mean_returns(pred, target, n_bins=5)
    assert days == 2
    np.testing.assert_allclose(mean, [4.5] * 5)  # (0.5 + 8.5) / 2, (2.5 + 6.5) / 2, ...
    # HAC on 2 days (L = 1): z = +-d/2, lrv = d^2/4 - d^2/8, fixed-b c = 1/3 -> se = |d| sqrt(3/16)
    np.testing.assert_allclose(se, np.abs([0.5 - 8.5, 2.5 - 6.5, 0, 6.5 - 2.5, 8.5 - 0.5]) * math.sqrt(3 / 16))
    mono, _, _ = quantile_mean_returns(pred[:1], target[:1], n_bins=5)
    np.testing.assert_allclose(mono, [0.5, 2.5, 4.5, 6.5, 8.5])
