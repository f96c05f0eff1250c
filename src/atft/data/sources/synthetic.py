"""A synthetic market with planted, known alpha, for checking that models learn what they should.

Daily log return of stock i on day t (all shocks standard normal, independent):

    lr[t,i] = a[t,i] + beta_i f_m[t] + gamma_i f_s(i)[t] + kappa_i f_c(i)[t] + sig[t,i] e[t,i] - v[t,i] / 2
    a[t,i]  = reversal + conditional + sector + cluster + regime, each a function of data up to t-1:

    reversal     -rho (lr[t-1,i] - w S_s(i)[t-1])                 own history (w = reversal_vs_sector:
                                                                  0 plain, 1 relative to the sector)
    conditional  cond u[t-1,i] lr[t-1,i]                          continuation after a volume spike
                                                                  (u = +1), reversal after a volume
                                                                  drought (u = -1), nothing otherwise
    sector       sector_lam (S_s(i)[t-1] - M[t-1])                 the sector's excess mean return
    cluster      lam_i (L_c(i)[t-1] + L_c(i)[t-2] / 2)             hidden-cluster lead-lag
    regime       q[t] sum_{k=2..21} lr[t-k,i]                      20-day momentum (skipping the last
                                                                  day) whose loading q changes at
                                                                  day regime_at x D

- ``f_m`` market, ``f_s`` sector and ``f_c`` hidden-cluster factors, each with stochastic volatility
  (log-AR(1)); ``sig`` the stock's own stochastic volatility. ``v`` is the total conditional variance,
  so ``E[exp(lr[t,i]) | t-1] = exp(a[t,i])`` exactly.
- ``u[t,i]`` is +1 (share ``volume_state_share``), -1 (same share) or 0, independent of everything
  else, and moves that day's log volume by ``volume_jump x u``: the state is visible in the day's own
  volume features, and since ``E[u] = 0`` the conditional loading averages to zero (a linear model
  sees none of it).
- ``S_s[t]`` / ``M[t]``: equal-weight mean log return of sector s / of all stocks on day t.
- ``L_c[t]``: mean log return of the *leaders* of hidden cluster c on day t. Followers (``lam_i = lam``;
  leaders have 0) load on their leaders' last two days. Clusters are independent of sectors and not
  given to the model: only cross-stock information (e.g. a return-correlation graph, since cluster
  members share ``f_c``) reveals them.

The oracle ``oracle_{h}d`` at t is ``exp(sum_k E[a[t+k] | t]) - 1`` with the recursion run forward with
future shocks and volume states at their mean: exact for h = 1, first order for h > 1 (it ignores the
convexity from a's dependence on intermediate shocks, well below 1 bp a day here). Its parts
``oracle_<component>_{h}d = sum_k E[a_component[t+k] | t]`` (log-return units) add up to
``log(1 + oracle_{h}d)``.

OHLCV: open = previous close x exp(overnight part of lr), high/low beyond max/min(open, close) by
half-normal amounts, volume log-normal around a stock level, rising with |lr| / sig and jumping with u.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from atft.errors import InputError

COMPONENTS = ("reversal", "conditional", "sector", "cluster", "regime")
REGIME_WINDOW = 20  # days of own log return in the regime component's momentum
_MARKET = {  # the market every preset shares
    "leader_share": 0.25,  # share of each hidden cluster that leads
    "market_vol": 0.010, "sector_vol": 0.007, "cluster_vol": 0.009, "idio_vol": 0.016,  # daily
    "vol_persistence": 0.97, "vol_of_vol": 0.08,
    "regime_at": 0.5,  # the regime changes on day floor(regime_at x D)
}
_OFF = {"reversal_vs_sector": 0.0, "cond": 0.0, "volume_state_share": 0.0, "volume_jump": 0.0, "sector_lam": 0.0,
        "regime_before": 0.0, "regime_after": 0.0}
PRESETS = {  # ``data.build.synthetic.preset``; the other keys of ``data.build.synthetic`` override these
    "rich": {**_MARKET, "rho": 0.12, "reversal_vs_sector": 1.0, "cond": 0.30, "volume_state_share": 0.08, "volume_jump": 1.5,
             "sector_lam": 0.25, "lam": 0.20, "regime_before": 0.0, "regime_after": 0.012},
    "linear": {**_MARKET, **_OFF, "rho": 0.15, "lam": 0.0},  # own reversal only
    "legacy": {**_MARKET, **_OFF, "rho": 0.08, "lam": 0.30},  # the market before the presets, draw for draw
}
DEFAULT_PRESET = "rich"
PARAMS = PRESETS[DEFAULT_PRESET]
SIGNED = ("rho", "cond", "sector_lam", "lam", "regime_before", "regime_after")  # loadings may be negative


def market_params(overrides=None) -> dict:
    """The preset's parameters (``overrides["preset"]``, default rich) with the other overrides applied.

    Args:
        overrides: mapping of parameter names (``data.build.synthetic``); None values are ignored.

    Returns:
        ``{"preset": name, <parameter>: float, ...}``.
    """
    overrides = {k: v for k, v in dict(overrides or {}).items() if v is not None}
    preset = str(overrides.pop("preset", DEFAULT_PRESET))
    if preset not in PRESETS:
        raise InputError(f"data.build.synthetic.preset={preset} is not a preset; expected one of {', '.join(PRESETS)}")
    unknown = sorted(set(overrides) - set(PRESETS[preset]))
    if unknown:
        raise InputError(f"data.build.synthetic.{unknown[0]} is not a synthetic-market parameter; "
                         f"expected preset or one of {', '.join(PRESETS[preset])}")
    params = {**PRESETS[preset], **{k: float(v) for k, v in overrides.items()}}
    ranges = {"leader_share": 0 < params["leader_share"] < 1, "vol_persistence": params["vol_persistence"] < 1,
              "volume_state_share": params["volume_state_share"] <= 0.5, "regime_at": params["regime_at"] <= 1,
              "reversal_vs_sector": params["reversal_vs_sector"] <= 1}
    bad = [k for k, v in params.items() if not (np.isfinite(v) and (v >= 0 or k in SIGNED) and ranges.get(k, True))]
    if bad:
        raise InputError(f"data.build.synthetic.{bad[0]}={params[bad[0]]} is out of range; expected finite, >= 0 "
                         "except the loadings (rho, cond, sector_lam, lam, regime_*), leader_share in (0, 1), "
                         "vol_persistence < 1, volume_state_share <= 0.5, regime_at and reversal_vs_sector <= 1")
    return {"preset": preset, **params}


def active_components(p: dict) -> list[str]:
    """Components with a non-zero loading under parameters ``p`` (those get oracle columns)."""
    on = {"reversal": p["rho"] != 0, "conditional": p["cond"] != 0 and p["volume_state_share"] > 0,
          "sector": p["sector_lam"] != 0, "cluster": p["lam"] != 0,
          "regime": p["regime_before"] != 0 or p["regime_after"] != 0}
    return [c for c in COMPONENTS if on[c]]


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
    sector = rng.integers(0, n_sectors, n)
    members = (cluster[:, None] == np.arange(n_clusters)[None, :]) & leader[:, None]  # [N, K] leaders only
    onehot = (sector[:, None] == np.arange(n_sectors)[None, :]).astype(float)  # [N, S]
    return {
        "sector": sector, "cluster": cluster, "leader": leader, "W": W,
        "leader_mean": members / members.sum(0, keepdims=True),  # x @ it: each cluster's leader mean [.., K]
        "follow": np.where(leader, 0.0, params["lam"]),  # [N]
        "sector_mean": onehot / np.maximum(onehot.sum(0, keepdims=True), 1),  # lr @ it: sector means [.., S]
        "market": np.where(rng.random(n) < 0.6, "Prime", "Growth"),
        "beta": rng.normal(1.0, 0.3, n), "gamma": rng.normal(1.0, 0.2, n), "kappa": rng.uniform(0.8, 1.2, n),
        "n_sectors": n_sectors, "n_clusters": n_clusters,
    }


def leads(x: np.ndarray, s: dict) -> np.ndarray:
    """``x @ W.T``: lam x the mean of ``x`` over each follower's cluster leaders, 0 for leaders.  # [.., N]

    Through the ``[N, K]`` leader-mean matrix (N x K work per row instead of the dense N x N product;
    equal to it up to float rounding).
    """
    return (x @ s["leader_mean"])[..., s["cluster"]] * s["follow"]


def _alpha(lag1: np.ndarray, lag2: np.ndarray, W: np.ndarray, rho: float = PRESETS["legacy"]["rho"]) -> np.ndarray:
    """Reversal + cluster lead-lag (the legacy market's whole alpha) from the last two days.  # [.., N]"""
    return alpha_parts(lag1, lag1 @ W.T, lag2 @ W.T, None, None, None, {}, {**PRESETS["legacy"], "rho": rho})[0]


def alpha_parts(lag1, lead1, lead2, state, momentum, q, s: dict, p: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Planted expected log return of day t and its components, from data up to t-1.

    Args:
        lag1: ``lr[t-1]`` ``[.., N]``. lead1, lead2: ``lr[t-1] @ W.T``, ``lr[t-2] @ W.T`` (the followers'
            leader means x lam; computed by the caller, which reuses each one on the next day). state: volume state ``u[t-1]`` ``[.., N]``
            (None: 0). momentum: ``sum_{k=2..21} lr[t-k]`` ``[.., N]`` (None: 0). q: regime loading of
            day t, scalar or ``[.., 1]``. s: structure (``sector``, ``sector_mean``). p: parameters.

    Returns:
        ``(a, parts)``: total ``[.., N]`` and ``{component: [.., N]}`` for the non-zero components.
    """
    sector_mean = None
    if p["sector_lam"] or p["reversal_vs_sector"]:
        sector_mean = (lag1 @ s["sector_mean"])[..., s["sector"]]  # S_s(i)[t-1]  # [.., N]
    own = lag1 - p["reversal_vs_sector"] * sector_mean if p["reversal_vs_sector"] else lag1
    rev, near, far = -p["rho"] * own, lead1, 0.5 * lead2
    total = rev + near + far  # this order keeps the legacy market bit for bit
    parts = {"reversal": rev, "cluster": near + far}
    if state is not None and p["cond"]:
        parts["conditional"] = p["cond"] * state * lag1
    if p["sector_lam"]:
        parts["sector"] = p["sector_lam"] * (sector_mean - lag1.mean(-1, keepdims=True))
    if momentum is not None and (p["regime_before"] or p["regime_after"]):
        parts["regime"] = q * momentum
    for name in ("conditional", "sector", "regime"):
        total = total + parts.get(name, 0.0)
    return total, parts


def regime_loadings(days: int, p: dict) -> np.ndarray:
    """``q[t]``: the regime component's loading on the return of day t.  # [D]"""
    return np.where(np.arange(days) < int(p["regime_at"] * days), p["regime_before"], p["regime_after"])


def volume_states(rng, days: int, n: int, share: float) -> np.ndarray:
    """``u[t,i]`` in {-1, 0, +1}: +1 and -1 each with probability ``share``.  # [D, N]"""
    x = rng.random((days, n))
    return np.where(x < share, 1.0, np.where(x >= 1.0 - share, -1.0, 0.0))


def _simulate(rng, n: int, days: int, s: dict, p: dict, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log returns, alphas and conditional variances, each ``[D, N]``."""
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
    q, lead1, lead2 = regime_loadings(days, p), zero, zero
    for t in range(days):  # the recursion is sequential in time; each step is vectorised over stocks
        lag1 = lr[t - 1] if t >= 1 else zero
        lead1, lead2 = (leads(lag1, s) if t >= 1 else zero), lead1
        momentum = lr[max(t - 1 - REGIME_WINDOW, 0):t - 1].sum(0) if t >= 2 else zero  # lr[t-21..t-2]
        alpha[t] = alpha_parts(lag1, lead1, lead2, states[t - 1] if t else zero, momentum, q[t], s, p)[0]
        lr[t] = alpha[t] + shock[t]
    return lr, alpha, var


def _shift(x: np.ndarray, j: int) -> np.ndarray:
    """Row t -> ``x[t + j]`` for j <= 0, zero before the first day.  # [D, N]"""
    return x if j == 0 else np.vstack([np.zeros_like(x[:-j]), x[:j]])


def _oracle(lr: np.ndarray, var: np.ndarray, s: dict, p: dict, states: np.ndarray,
            horizons: list[int]) -> dict[str, np.ndarray]:
    """``oracle_{h}d`` and ``oracle_<component>_{h}d`` for every information date t.  # [D, N] each

    Step k evaluates ``E[a[t+k] | t]`` with the history known at t and the expected log returns of the
    steps taken since (future volume states at their mean 0).
    """
    days, last = len(lr), max(horizons)
    q = regime_loadings(days, p)
    q = np.concatenate([q, np.full(last, q[-1])])  # the last regime holds past the data  # [D + h]
    lag1, lead1 = lr, leads(_shift(lr, -1), s)                          # lr[t], lr[t-1] @ W.T
    regime = "regime" in active_components(p)
    # momentum of return day t+k sums the days t+k-21..t+k-2 (relative days k-21..k-2)
    momentum = sum(_shift(lr, -j) for j in range(1, REGIME_WINDOW + 1)) if regime else None
    total, parts, future, out = np.zeros_like(lr), {}, {}, {}
    for k in range(1, last + 1):
        lead1, lead2 = leads(lag1, s), lead1
        a, step = alpha_parts(lag1, lead1, lead2, states if k == 1 else None, momentum, q[k:days + k, None], s, p)
        total += a
        for name, value in step.items():
            parts[name] = parts.get(name, 0.0) + value
        if k in horizons:
            out[f"oracle_{k}d"] = np.expm1(total).astype(np.float32)
            out.update({f"oracle_{c}_{k}d": parts[c].astype(np.float32) for c in active_components(p)})
        expected = a - 0.5 * var  # expected log return of the step just taken
        if regime and k < last:  # day k-1 enters the window, day k-21 leaves it
            drop = k - 1 - REGIME_WINDOW
            momentum = momentum + lag1 - (future.pop(drop) if drop >= 1 else _shift(lr, drop))
            if k + 1 + REGIME_WINDOW < last:
                future[k] = expected
        lag1 = expected
    return out


def _ohlcv(rng, lr: np.ndarray, var: np.ndarray, volume_shift: np.ndarray) -> dict[str, np.ndarray]:
    days, n = lr.shape
    sd = np.sqrt(var)
    close = 30.0 * rng.lognormal(0, 0.6, n) * np.exp(np.cumsum(lr, axis=0))      # [D, N]
    prev = np.vstack([close[:1] / np.exp(lr[:1]), close[:-1]])
    gap = 0.3 * lr + 0.2 * sd * rng.standard_normal((days, n))
    open_ = prev * np.exp(gap)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.4, (days, n))) * sd)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.4, (days, n))) * sd)
    level = 1e6 * rng.lognormal(0, 0.8, n)
    volume = np.round(level * np.exp(0.3 * rng.standard_normal((days, n)) + 0.5 * np.abs(lr) / sd + volume_shift))
    return {"Open": open_, "High": high, "Low": low, "Close": close, "Volume": np.maximum(volume, 1.0)}


def _business_days(days: int, start: str = "2016-01-04") -> np.ndarray:
    cal = np.datetime64(start) + np.arange(days * 2)
    return cal[np.is_busday(cal)][:days]


def synthetic_market(stocks: int, days: int, seed: int, horizons: list[int], params=None):
    """Raw panel, source info and oracle frame for the planted market.

    Args:
        stocks: N (>= 10). days: D (>= 30). seed: makes the market reproducible. horizons: oracle horizons.
        params: ``data.build.synthetic``: ``preset`` (rich | linear | legacy, default rich) and overrides of
            its parameters, e.g. ``{"lam": 0.5}``; None -> the rich preset.

    Returns:
        ``(raw, info, oracle)``; oracle has ``Code, Date, oracle_{h}d`` and ``oracle_<component>_{h}d``
        for each active component (non-zero loading).
    """
    if stocks < 10 or days < 30:
        raise ValueError(f"synthetic market needs stocks >= 10 and days >= 30, got {stocks} x {days}")
    p = market_params(params)
    horizons = [int(h) for h in horizons]
    seq = np.random.SeedSequence(seed)
    rng = np.random.default_rng(seq)  # the legacy market's stream, draw for draw
    states = volume_states(np.random.default_rng(seq.spawn(1)[0]), days, stocks, p["volume_state_share"])
    s = _structure(rng, stocks, p)
    lr, _, var = _simulate(rng, stocks, days, s, p, states)
    prices = _ohlcv(rng, lr, var, p["volume_jump"] * states)
    oracle = _oracle(lr, var, s, p, states, horizons)
    dates = _business_days(days)
    stock = pl.Series(np.repeat(np.arange(stocks), days))  # (Code, Date) order: row -> its stock
    per_stock = {"Code": [f"S{i:04d}" for i in range(stocks)], "Sector": [f"Sector{x:02d}" for x in s["sector"]],
                 "Market": list(s["market"])}
    strings = {k: pl.Series(k, v, pl.Utf8).gather(stock) for k, v in per_stock.items()}  # [N * D] each
    key = [strings["Code"], pl.Series("Date", np.tile(dates, stocks)).cast(pl.Date)]
    flat = [pl.Series(k, prices.pop(k).T.ravel()) for k in list(prices)]          # [D, N] -> [N * D]
    raw = pl.DataFrame([*key, *flat, strings["Sector"], strings["Market"]])
    columns = [f"oracle_{h}d" for h in horizons] + [f"oracle_{c}_{h}d" for h in horizons for c in active_components(p)]
    oracle_df = pl.DataFrame([*key, *[pl.Series(c, oracle.pop(c).T.ravel()) for c in columns]])
    info = {"name": "synthetic", "stocks": stocks, "days": days, "seed": seed, "params": p,
            "components": active_components(p), "regime_change": str(dates[min(int(p["regime_at"] * days), days - 1)]),
            "sectors": s["n_sectors"], "hidden_clusters": s["n_clusters"], "leaders": int(s["leader"].sum())}
    return raw, info, oracle_df
