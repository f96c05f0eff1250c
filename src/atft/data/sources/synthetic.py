"""A synthetic market with planted, known alpha, for checking that models learn what they should.

Daily log return of stock i on day t (all shocks standard normal, independent):

    lr[t,i] = a[t,i] + beta_i f_m[t] + gamma_i f_s(i)[t] + kappa_i f_c(i)[t] + sig[t,i] e[t,i] - v[t,i] / 2
    a[t,i]  = -rho lr[t-1,i] + lam_i (L_c(i)[t-1] + L_c(i)[t-2] / 2)

- ``f_m`` market, ``f_s`` sector and ``f_c`` hidden-cluster factors, each with stochastic volatility
  (log-AR(1)); ``sig`` the stock's own stochastic volatility. ``v`` is the total conditional variance,
  so ``E[exp(lr[t,i]) | t-1] = exp(a[t,i])`` exactly.
- ``-rho lr[t-1]``: own-history short-term reversal.
- ``L_c[t]``: mean log return of the *leaders* of hidden cluster c on day t. Followers (``lam_i = lam``;
  leaders have 0) load on their leaders' last two days. Clusters are independent of sectors and not
  given to the model: only cross-stock information (e.g. a return-correlation graph, since cluster
  members share ``f_c``) reveals them.

The oracle ``oracle_{h}d`` at t is ``exp(sum_k E[a[t+k] | t]) - 1`` with the linear recursion run
forward with future shocks at their mean: exact for h = 1, first order for h > 1 (it ignores the
convexity from a's dependence on intermediate shocks, well below 1 bp a day here).

OHLCV: open = previous close x exp(overnight part of lr), high/low beyond max/min(open, close) by
half-normal amounts, volume log-normal around a stock level and rising with |lr| / sig.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from atft.errors import InputError

PARAMS = {  # defaults; ``data.build.synthetic.<name>`` overrides any of them
    "rho": 0.08,          # reversal loading on own last log return
    "lam": 0.30,          # follower loading on its cluster leaders' last log return
    "leader_share": 0.25,  # share of each hidden cluster that leads
    "market_vol": 0.010, "sector_vol": 0.007, "cluster_vol": 0.009, "idio_vol": 0.016,  # daily
    "vol_persistence": 0.97, "vol_of_vol": 0.08,
}


def market_params(overrides=None) -> dict:
    """``PARAMS`` with ``overrides`` (a mapping of the same names, None values ignored) applied."""
    overrides = {k: v for k, v in dict(overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - set(PARAMS))
    if unknown:
        raise InputError(f"data.build.synthetic.{unknown[0]} is not a synthetic-market parameter; "
                         f"expected one of {', '.join(PARAMS)}")
    params = {**PARAMS, **{k: float(v) for k, v in overrides.items()}}
    bad = [k for k, v in params.items() if not np.isfinite(v) or (v < 0 and k != "rho")]  # rho < 0: momentum
    if bad or not 0 < params["leader_share"] < 1 or params["vol_persistence"] >= 1:
        name = (bad or ["leader_share" if not 0 < params["leader_share"] < 1 else "vol_persistence"])[0]
        raise InputError(f"data.build.synthetic.{name}={params[name]} is out of range; expected finite, >= 0 "
                         "except rho, leader_share in (0, 1), vol_persistence < 1")
    return params


def _log_ar_vol(rng, days: int, n: int, level, phi: float, eta: float) -> np.ndarray:
    """Stochastic volatility ``exp(log level + x)`` with ``x`` AR(1); row t is known at t-1.  # [D, n]"""
    x = np.zeros((days, n))
    shocks = rng.standard_normal((days, n)) * eta
    for t in range(1, days):
        x[t] = phi * x[t - 1] + shocks[t - 1]
    return np.exp(np.log(level) + x - 0.5 * eta**2 / (1 - phi**2))


def _structure(rng, n: int, params: dict = PARAMS) -> dict:
    n_sectors = int(np.clip(n // 25, 2, 11))
    n_clusters = int(np.clip(n // 12, 2, 40))
    cluster = rng.permutation(np.arange(n) % n_clusters)
    leader = np.zeros(n, bool)
    for c in range(n_clusters):  # loop over clusters (<= 40), to pick each one's leaders
        members = np.flatnonzero(cluster == c)
        leader[members[: max(1, int(round(params["leader_share"] * len(members))))]] = True
    # W[i, j] = lam / |leaders of c(i)| for j a leader of c(i), i a follower: a = lr @ W.T  # [N, N]
    same = (cluster[:, None] == cluster[None, :]) & leader[None, :] & ~leader[:, None]
    W = same / np.maximum(same.sum(1, keepdims=True), 1) * params["lam"]
    return {
        "sector": rng.integers(0, n_sectors, n), "cluster": cluster, "leader": leader, "W": W,
        "market": np.where(rng.random(n) < 0.6, "Prime", "Growth"),
        "beta": rng.normal(1.0, 0.3, n), "gamma": rng.normal(1.0, 0.2, n), "kappa": rng.uniform(0.8, 1.2, n),
        "n_sectors": n_sectors, "n_clusters": n_clusters,
    }


def _alpha(lag1: np.ndarray, lag2: np.ndarray, W: np.ndarray, rho: float = PARAMS["rho"]) -> np.ndarray:
    """Planted expected log-return loading from the last two days' log returns.  # [.., N]"""
    return -rho * lag1 + lag1 @ W.T + 0.5 * (lag2 @ W.T)


def _simulate(rng, n: int, days: int, s: dict, p: dict = PARAMS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log returns, next-day alphas and conditional variances, each ``[D, N]``."""
    phi, eta = p["vol_persistence"], p["vol_of_vol"]
    sm = _log_ar_vol(rng, days, 1, p["market_vol"], phi, eta)                    # [D, 1]
    ss = _log_ar_vol(rng, days, s["n_sectors"], p["sector_vol"], phi, eta)       # [D, S]
    sc = _log_ar_vol(rng, days, s["n_clusters"], p["cluster_vol"], phi, eta)     # [D, K]
    si = _log_ar_vol(rng, days, n, p["idio_vol"] * rng.lognormal(0, 0.3, n), phi, eta)  # [D, N]
    load_s, load_c = s["gamma"] * ss[:, s["sector"]], s["kappa"] * sc[:, s["cluster"]]  # [D, N]
    var = (s["beta"] * sm) ** 2 + load_s**2 + load_c**2 + si**2                    # [D, N]
    fm = sm * rng.standard_normal((days, 1))
    fs = ss * rng.standard_normal((days, s["n_sectors"]))
    fc = sc * rng.standard_normal((days, s["n_clusters"]))
    shock = s["beta"] * fm + s["gamma"] * fs[:, s["sector"]] + s["kappa"] * fc[:, s["cluster"]]
    shock = shock + si * rng.standard_normal((days, n)) - 0.5 * var              # [D, N]
    lr, alpha, zero = np.zeros((days, n)), np.zeros((days, n)), np.zeros(n)
    for t in range(days):  # the AR recursion is sequential in time; each step is vectorised over stocks
        alpha[t] = _alpha(lr[t - 1] if t >= 1 else zero, lr[t - 2] if t >= 2 else zero, s["W"], p["rho"])
        lr[t] = alpha[t] + shock[t]
    return lr, alpha, var


def _oracle(lr: np.ndarray, var: np.ndarray, W: np.ndarray, horizons: list[int],
            rho: float = PARAMS["rho"]) -> dict[int, np.ndarray]:
    """``oracle_h[t] = exp(sum_{k<=h} E[a[t+k] | t]) - 1`` for every information date t.  # [D, N] each"""
    lag2, lag1 = np.vstack([np.zeros_like(lr[:1]), lr[:-1]]), lr   # lr[t-1], lr[t]
    total, out = np.zeros_like(lr), {}
    for k in range(1, max(horizons) + 1):
        a = _alpha(lag1, lag2, W, rho)
        total += a
        if k in horizons:
            out[k] = np.expm1(total)
        lag2, lag1 = lag1, a - 0.5 * var  # expected log return of the step just taken
    return out


def _ohlcv(rng, lr: np.ndarray, var: np.ndarray) -> dict[str, np.ndarray]:
    days, n = lr.shape
    sd = np.sqrt(var)
    close = 30.0 * rng.lognormal(0, 0.6, n) * np.exp(np.cumsum(lr, axis=0))      # [D, N]
    prev = np.vstack([close[:1] / np.exp(lr[:1]), close[:-1]])
    gap = 0.3 * lr + 0.2 * sd * rng.standard_normal((days, n))
    open_ = prev * np.exp(gap)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.4, (days, n))) * sd)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.4, (days, n))) * sd)
    level = 1e6 * rng.lognormal(0, 0.8, n)
    volume = np.round(level * np.exp(0.3 * rng.standard_normal((days, n)) + 0.5 * np.abs(lr) / sd))
    return {"Open": open_, "High": high, "Low": low, "Close": close, "Volume": np.maximum(volume, 1.0)}


def _business_days(days: int, start: str = "2016-01-04") -> np.ndarray:
    cal = np.datetime64(start) + np.arange(days * 2)
    return cal[np.is_busday(cal)][:days]


def synthetic_market(stocks: int, days: int, seed: int, horizons: list[int], params=None):
    """Raw panel, source info and oracle frame ``Code, Date, oracle_{h}d`` for the planted market.

    Args:
        stocks: N (>= 10). days: D (>= 30). seed: makes the market reproducible. horizons: oracle horizons.
        params: overrides of ``PARAMS`` (``data.build.synthetic``), e.g. ``{"lam": 0.5}``; None -> defaults.
    """
    if stocks < 10 or days < 30:
        raise ValueError(f"synthetic market needs stocks >= 10 and days >= 30, got {stocks} x {days}")
    p = market_params(params)
    rng = np.random.default_rng(seed)
    s = _structure(rng, stocks, p)
    lr, _, var = _simulate(rng, stocks, days, s, p)
    prices = _ohlcv(rng, lr, var)
    oracle = _oracle(lr, var, s["W"], [int(h) for h in horizons], p["rho"])
    codes = np.array([f"S{i:04d}" for i in range(stocks)])
    dates = _business_days(days)
    key = {"Code": np.repeat(codes, days), "Date": np.tile(dates, stocks)}  # (Code, Date) order
    flat = {k: v.T.ravel() for k, v in prices.items()}                     # [D, N] -> [N * D]
    static = {"Sector": np.repeat([f"Sector{x:02d}" for x in s["sector"]], days),
              "Market": np.repeat(s["market"], days)}
    raw = pl.DataFrame({**key, **flat, **static}).with_columns(pl.col("Date").cast(pl.Date))
    oracle_df = pl.DataFrame(
        {**key, **{f"oracle_{h}d": oracle[int(h)].T.ravel() for h in horizons}}
    ).with_columns(pl.col("Date").cast(pl.Date), pl.exclude("Code", "Date").cast(pl.Float32))
    info = {"name": "synthetic", "stocks": stocks, "days": days, "seed": seed, "params": p,
            "sectors": s["n_sectors"], "hidden_clusters": s["n_clusters"], "leaders": int(s["leader"].sum())}
    return raw, info, oracle_df
