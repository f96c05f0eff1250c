"""HAC standard errors: the SE a table reports for h-day overlapping daily series matches the true spread
of the mean across simulated panels; the iid formula ``std / sqrt(days)`` does not."""

import math

import numpy as np
import polars as pl
import pytest

from atft.evaluation.leaderboard import paired_comparisons
from atft.evaluation.metrics import TRADING_DAYS, hac_lags, hac_se, summarise_daily

DAYS, DRAWS = 250, 500


def overlapping_sums(rng, h: int, draws: int = DRAWS, days: int = DAYS) -> np.ndarray:
    """``draws`` daily series, each the h-day moving sum of iid noise (lag-k correlation 1 - k/h). # [draws, days]"""
    noise = rng.normal(0.0, 0.02, size=(draws, days + h - 1))
    csum = np.cumsum(np.hstack([np.zeros((draws, 1)), noise]), axis=1)
    return csum[:, h:] - csum[:, :-h]


def _series(x: np.ndarray) -> dict[str, np.ndarray]:
    """One horizon's daily series as ``daily_metrics`` returns them (IC = RankIC = book return = x)."""
    return {"ic": x, "rank_ic": x, "rank_ic_lag1": x, "ls_gross": x, "ls_net": x, "ls_turnover": np.zeros_like(x)}


@pytest.mark.parametrize("h", [1, 5, 20])
def test_reported_se_matches_the_spread_of_the_mean_across_draws(h):
    rng = np.random.default_rng(h)
    x = overlapping_sums(rng, h)
    rows = [summarise_daily(_series(xi), h, cost_bps=0.0) for xi in x]
    true_se = x.mean(axis=1).std(ddof=1)  # the empirical std of the mean across draws
    for key in ("rank_ic_se", "ic_se", "rank_ic_lag1_se"):
        reported = np.mean([r[key] for r in rows])
        assert reported == pytest.approx(true_se, rel=0.25), (key, reported / true_se)
    # the Sharpe SE of a book whose daily returns overlap like this
    true_sharpe_se = np.std([r["sharpe"] for r in rows], ddof=1)
    assert np.mean([r["sharpe_se"] for r in rows]) == pytest.approx(true_sharpe_se, rel=0.25)
    assert np.mean([r["ann_return_net_se"] for r in rows]) == pytest.approx(TRADING_DAYS * true_se, rel=0.25)
    assert rows[0]["se_lags"] == hac_lags(DAYS, h) >= h - 1
    if h == 20:  # the iid formula the tables used before is ~4.5x too small here
        iid = np.mean(x.std(axis=1, ddof=1) / math.sqrt(DAYS))
        assert iid < 0.75 * true_se


@pytest.mark.parametrize("h", [1, 20])
def test_paired_difference_se_is_hac(h):
    rng = np.random.default_rng(100 + h)
    draws = 200
    diff = overlapping_sums(rng, h, draws)  # the daily RankIC difference of two models
    dates = np.datetime64("2020-01-01") + np.arange(DAYS)
    ses, means = [], []
    for d in diff:
        frame = pl.DataFrame({"Date": np.tile(dates, 2), "model": ["atft"] * DAYS + ["ridge"] * DAYS, "seed": 0,
                              "horizon": h, "rank_ic": np.concatenate([d, np.zeros(DAYS)]),
                              "ls_net": np.concatenate([d, np.zeros(DAYS)])})
        comp = paired_comparisons(frame.with_columns(pl.col("Date").cast(pl.Date)), ["atft", "ridge"])[0]
        ses.append(comp["rank_ic"]["se"])
        means.append(comp["rank_ic"]["diff"])
        assert comp["ann_return_net"]["se"] == pytest.approx(TRADING_DAYS * comp["rank_ic"]["se"])
    assert np.mean(ses) == pytest.approx(np.std(means, ddof=1), rel=0.25)


def test_hac_se_reduces_to_iid_without_lags_and_handles_gaps():
    rng = np.random.default_rng(7)
    x = rng.normal(size=400)
    n = x.size
    c = 1 - 1 / n + 1 / (3 * n * n)  # fixed-b factor at L = 0
    assert hac_se(x, lags=0) == pytest.approx(x.std(ddof=0) / math.sqrt(n * c))
    # a NaN day leaves the sums but keeps the day axis: same as the reference loop over finite pairs
    y = overlapping_sums(rng, 5, draws=1, days=120)[0]
    y[[10, 11, 50]] = np.nan
    ok = np.isfinite(y)
    z = np.where(ok, y - y[ok].mean(), 0.0)
    m, L = int(ok.sum()), 10
    lrv = sum((1.0 if k == 0 else 2.0 * (1 - k / (L + 1))) *
              sum(z[t] * z[t + k] for t in range(len(y) - k) if ok[t] and ok[t + k]) / m for k in range(L + 1))
    b = (L + 1) / m
    assert hac_se(y, lags=L) == pytest.approx(math.sqrt(lrv / (m * (1 - b + b * b / 3))))
    assert hac_lags(m, 5) == L
    assert math.isnan(hac_se(np.array([1.0, np.nan])))


def test_pooled_independent_estimates_have_the_spread_of_their_mean():
    from atft.evaluation.hac import pool_independent

    assert pool_independent([(0.2, 0.3)]) == (0.2, 0.3)
    mean, se = pool_independent([(1.0, 0.3), (-1.0, 0.4)])
    assert mean == 0.0 and abs(se - 0.25) < 1e-12  # sqrt(0.09 + 0.16) / 2
    # against simulation: five independent estimates with their own SEs, pooled over many draws
    rng = np.random.default_rng(0)
    ses = np.array([0.1, 0.2, 0.3, 0.1, 0.5])
    means = (rng.standard_normal((20_000, 5)) * ses).mean(1)
    assert abs(pool_independent([(0.0, s) for s in ses])[1] / means.std() - 1) < 0.03
    with pytest.raises(ValueError):
        pool_independent([])
