"""The planted market's components: the oracle is the conditional expectation, part by part, and the
presets plant what they say."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from atft.data.sources import synthetic as syn
from atft.data.sources.synthetic import COMPONENTS, PRESETS, synthetic_market


def _grid(frame: pl.DataFrame, col: str, n: int, days: int) -> np.ndarray:
    """A ``(Code, Date)``-ordered column as ``[D, N]``."""
    return frame[col].cast(pl.Float64).to_numpy().reshape(n, days).T


def test_realised_returns_load_one_for_one_on_every_component():
    # E[lr[t+1] | t] = sum of the 1d components: regressing realised next-day log returns on them
    # (both demeaned per day, which removes the market factor) must give slope 1 for each. Quieter sector
    # and cluster factors keep the residuals close to independent across stocks, so that the
    # heteroscedasticity-robust (White) standard error holds.
    n, days = 200, 1500
    raw, info, oracle = synthetic_market(n, days, seed=11, horizons=[1], params={"sector_vol": 0.002, "cluster_vol": 0.003})
    assert info["components"] == list(COMPONENTS)
    close = _grid(raw, "Close", n, days)
    y = np.log(close[1:] / close[:-1])  # [D-1, N], the return of day t+1 on row t
    X = np.stack([_grid(oracle, f"oracle_{c}_1d", n, days)[:-1] for c in COMPONENTS], -1)  # [D-1, N, 5]
    y, X = y - y.mean(1, keepdims=True), X - X.mean(1, keepdims=True)
    X, y = X.reshape(-1, len(COMPONENTS)), y.ravel()
    slope, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid, inv = y - X @ slope, np.linalg.inv(X.T @ X)
    se = np.sqrt(np.diag(inv @ (X.T * resid**2) @ X @ inv))
    for name, b, s in zip(COMPONENTS, slope, se, strict=True):
        assert abs(b - 1) < 4 * s and s < 0.08, (name, b, s)
    # the parts add up to the oracle: log(1 + oracle) = sum of the parts
    total = np.log1p(_grid(oracle, "oracle_1d", n, days))
    parts = sum(_grid(oracle, f"oracle_{c}_1d", n, days) for c in COMPONENTS)
    np.testing.assert_allclose(parts, total, atol=2e-7)


def test_multi_day_oracle_runs_the_recursion_forward():
    # oracle_h at t = exp(sum_k E[a[t+k] | t]) - 1: step the simulator forward from t with every future
    # shock and volume state at its mean, and compare (h = 25 also exercises the regime window's memory)
    p = syn.market_params(None)
    n, days, t, h = 30, 200, 120, 25
    seq = np.random.SeedSequence(4)
    rng = np.random.default_rng(seq)
    states = syn.volume_states(np.random.default_rng(seq.spawn(1)[0]), days, n, p["volume_state_share"])
    s = syn._structure(rng, n, p)
    lr, alpha, var = syn._simulate(rng, n, days, s, p, states)
    oracle = syn._oracle(lr, var, s, p, states, [1, h])
    np.testing.assert_allclose(oracle["oracle_1d"][:-1], np.expm1(alpha[1:]), atol=1e-7)
    path, q, total = list(lr[: t + 1]), syn.regime_loadings(days, p), 0.0
    for d in range(t + 1, t + h + 1):
        hist = np.array(path)
        a, _ = syn.alpha_parts(hist[d - 1], hist[d - 1] @ s["W"].T, hist[d - 2] @ s["W"].T,
                               states[t] if d == t + 1 else np.zeros(n), hist[d - 21:d - 1].sum(0), q[min(d, days - 1)],
                               s, p)
        total += a
        path.append(a - 0.5 * var[t])
    np.testing.assert_allclose(oracle[f"oracle_{h}d"][t], np.expm1(total), rtol=1e-5, atol=1e-7)


def test_linear_preset_plants_only_the_reversal():
    raw, info, oracle = synthetic_market(20, 60, seed=2, horizons=[1, 5], params={"preset": "linear"})
    assert info["components"] == ["reversal"] and info["params"]["preset"] == "linear"
    assert oracle.columns == ["Code", "Date", "oracle_1d", "oracle_5d", "oracle_reversal_1d", "oracle_reversal_5d"]
    lr = raw.select((pl.col("Close") / pl.col("Close").shift(1).over("Code")).log())["Close"].to_numpy()
    ok = np.isfinite(lr)
    np.testing.assert_allclose(oracle["oracle_1d"].to_numpy()[ok], np.expm1(-PRESETS["linear"]["rho"] * lr[ok]),
                               rtol=1e-4, atol=1e-7)


def test_legacy_preset_is_the_market_before_presets():
    # pinned from the generator as it was before the presets (same seed, same draws, bit for bit)
    raw, info, oracle = synthetic_market(20, 60, seed=5, horizons=[1, 5], params={"preset": "legacy"})
    assert info["components"] == ["reversal", "cluster"]
    assert float(raw["Close"].sum()) == 44545.877859844055 and float(raw["Volume"].sum()) == 2265303962.0
    assert float(oracle["oracle_1d"].sum()) == pytest.approx(0.17263832688331604, rel=1e-12)
    assert float(oracle["oracle_5d"].sum()) == pytest.approx(-0.05802612379193306, rel=1e-12)


def test_rich_market_shares_the_legacy_shocks_and_marks_volume_states():
    n, days = 40, 120
    rich, _, _ = synthetic_market(n, days, seed=3, horizons=[1])
    quiet, _, _ = synthetic_market(n, days, seed=3, horizons=[1], params={"volume_jump": 0.0})
    p = syn.market_params(None)
    states = syn.volume_states(np.random.default_rng(np.random.SeedSequence(3).spawn(1)[0]), days, n,
                               p["volume_state_share"])
    jump = np.log(_grid(rich, "Volume", n, days) / _grid(quiet, "Volume", n, days))
    # a spike (drought) day's volume is exp(+-volume_jump) times what it would have been; others untouched
    np.testing.assert_allclose(jump, p["volume_jump"] * states, atol=1e-3)  # volumes are rounded
    assert 0.1 < np.abs(states).mean() < 0.22 and abs(states.mean()) < 0.02  # E[u] = 0: no linear signal


def test_regime_component_changes_at_the_configured_day():
    n, days = 30, 100
    _, info, oracle = synthetic_market(n, days, seed=1, horizons=[1], params={"regime_at": 0.3})
    reg = _grid(oracle, "oracle_regime_1d", n, days)  # row t: loading of day t+1
    assert np.all(reg[: 30 - 1] == 0) and np.all(np.abs(reg[30:]).sum(1) > 0)
    assert info["regime_change"] == str(oracle["Date"].unique().sort()[30])
