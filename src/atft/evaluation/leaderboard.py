"""Leaderboard: mean +- std over seeds per model, metric and horizon; paired significance of differences.

A difference between two models is judged on the SAME days: the daily RankIC (or net long-short
return) of one minus the other, whose mean has the Newey-West HAC standard error of
:func:`atft.evaluation.metrics.hac_se` (at horizon h the daily differences overlap by h - 1 days). It is
called real only when ``|mean| > 2 SE``; anything inside is reported as "within 2 SE (not
distinguishable)".
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from atft.evaluation.decomposition import format_decomposition
from atft.evaluation.metrics import (
    SE_METHOD,
    SE_RULE,
    TRADEABLE_LAG,
    TRADING_DAYS,
    hac_lags,
    ic_summary,
    lag_label,
)
from atft.io_utils import clean_json  # noqa: F401  (re-exported: the leaderboard's JSON form)

BOARD_METRICS = ("rank_ic", "rank_ic_se", "tstat", "ic", "icir", "rank_icir", "sharpe", "sharpe_net",
                 "sharpe_se", "sharpe_net_beta_neutral", "ann_return_net", "max_drawdown_net", "turnover",
                 "hit_rate", "days")
SIGNIFICANCE = 2.0  # standard errors


def _num(value) -> float:
    return math.nan if value is None else float(value)


def _mean_std(values: list[float]) -> dict[str, float]:
    x = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    return {"mean": float(x.mean()) if x.size else math.nan,
            "std": float(x.std(ddof=1)) if x.size > 1 else 0.0 if x.size else math.nan, "n": int(x.size)}


def aggregate_runs(results: dict[str, list[dict]], oracle: str | None = None) -> dict:
    """``results[model] = [metrics of seed 0, ...]`` -> mean/std/n per metric, plus share of the oracle."""
    models = {}
    for name, runs in results.items():
        models[name] = {h: {m: _mean_std([r[h].get(m, math.nan) for r in runs]) for m in runs[0][h]}
                        for h in runs[0]}
    board = {"models": models}
    if oracle is not None:
        share = {}
        for name, by_h in models.items():
            share[name] = {h: by_h[h]["rank_ic"]["mean"] / models[oracle][h]["rank_ic"]["mean"]
                           if models[oracle][h]["rank_ic"]["mean"] else math.nan for h in by_h}
        board["oracle_share"] = share
    return board


def _paired(a: np.ndarray, b: np.ndarray, scale: float = 1.0, horizon: int = 1) -> dict[str, float]:
    """Mean, HAC SE and t of the daily difference a - b over the days where both are finite."""
    s = ic_summary(a - b, horizon)
    mean, se = s["mean"] * scale, s["se"] * scale
    t = mean / se if se and np.isfinite(se) and se > 0 else math.nan
    if not np.isfinite(t):
        verdict = "undetermined"
    elif abs(t) <= SIGNIFICANCE:
        verdict = "within 2 SE (not distinguishable)"
    else:
        verdict = "higher" if t > 0 else "lower"
    return {"diff": mean, "se": se, "t": t, "days": s["days"], "se_lags": s["lags"], "verdict": verdict}


def seed_mean_series(daily: pl.DataFrame, model: str, horizon: int, column: str) -> np.ndarray:
    """Seed-averaged daily series of one model, ordered by date. # [D_test]"""
    part = daily.filter((pl.col("model") == model) & (pl.col("horizon") == horizon))
    agg = part.group_by("Date").agg(pl.col(column).fill_nan(None).mean()).sort("Date")
    return agg[column].cast(pl.Float64).fill_null(np.nan).to_numpy()


def paired_comparisons(daily: pl.DataFrame, models: list[str]) -> list[dict]:
    """Reference model (``atft`` if present, else the first) vs every other model, per horizon.

    Daily RankIC and annualised net long-short return differences, reference minus other.
    """
    present = [m for m in models if m in set(daily["model"].unique().to_list())]
    if len(present) < 2:
        return []
    ref = "atft" if "atft" in present else present[0]
    out = []
    for h in sorted(daily["horizon"].unique().to_list()):
        ref_ic, ref_ls = (seed_mean_series(daily, ref, h, c) for c in ("rank_ic", "ls_net"))
        for other in present:
            if other == ref:
                continue
            row = {"reference": ref, "other": other, "horizon": f"{h}d"}
            row["rank_ic"] = _paired(ref_ic, seed_mean_series(daily, other, h, "rank_ic"), horizon=h)
            row["ann_return_net"] = _paired(ref_ls, seed_mean_series(daily, other, h, "ls_net"), TRADING_DAYS, h)
            out.append(row)
    return out


def rank_ic_difference(board: dict, model: str, other: str, horizon: str = "1d") -> tuple[float, float]:
    """``model`` minus ``other`` in mean daily RankIC at ``horizon`` from a leaderboard's paired comparisons
    (either order), and the HAC SE of the paired daily difference."""
    row = next(c for c in board["comparisons"] if c["horizon"] == horizon and {c["reference"], c["other"]} ==
               {model, other})
    sign = 1.0 if row["reference"] == model else -1.0
    return sign * row["rank_ic"]["diff"], row["rank_ic"]["se"]


def lag_text(lag: int) -> str:
    """What the books' execution lag means, for footnotes."""
    if lag == 0:
        return "lag 0: entered at the close that produced the signal (not tradeable)"
    return f"lag {lag}: a signal from the close of t is entered at the close of t+{lag}"


def _fmt(stat: dict, digits: int = 3, pct: bool = False) -> str:
    mean, std = stat["mean"], stat["std"]
    if not np.isfinite(mean):
        return "n/a"
    if pct:
        return f"{mean:.1%} ± {std:.1%}" if stat["n"] > 1 else f"{mean:.1%}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if stat["n"] > 1 else f"{mean:.{digits}f}"


def format_leaderboard(board: dict) -> str:
    """Markdown tables (one per horizon), the paired comparisons, and how to read them."""
    lines = [f"# Leaderboard — {board.get('dataset', '')}", "",
             f"Test days: {board.get('test_days')} ({board.get('test_first')} … {board.get('test_last')}); "
             f"walk-forward folds: {board.get('folds') or 'none'}; seeds: {board.get('seeds')}; "
             f"one-way cost: {board.get('cost_bps')} bps. Mean ± std over seeds; every model is scored on the "
             "same days and stocks.", ""]
    share = board.get("oracle_share")
    lag = int(board.get("lag", TRADEABLE_LAG))
    for h in board.get("horizons", []):
        key = f"{h}d"
        lines += [f"## Horizon {key}", "",
                  f"| model | RankIC | SE | t | IC | ICIR | Sharpe({lag_label(lag)}) | Sharpe net | ±SE "
                  "| Sharpe net β-neutral | ann. ret net | max DD net | turnover | days |" + (" oracle share |" if share else ""),
                  "|---" * (14 + bool(share)) + "|"]
        rows = sorted(board["models"].items(), key=lambda kv: -np.nan_to_num(kv[1][key]["rank_ic"]["mean"],
                                                                               nan=-9))
        for name, by_h in rows:
            m = by_h[key]
            cells = [name, _fmt(m["rank_ic"], 4), _fmt(m["rank_ic_se"], 4), _fmt(m["tstat"], 1), _fmt(m["ic"], 4),
                     _fmt(m["icir"], 2), _fmt(m["sharpe"], 2), _fmt(m["sharpe_net"], 2), _fmt(m["sharpe_se"], 2),
                     _fmt(m.get("sharpe_net_beta_neutral", {"mean": math.nan, "std": 0, "n": 0}), 2),
                     _fmt(m["ann_return_net"], pct=True), _fmt(m["max_drawdown_net"], pct=True),
                     _fmt(m["turnover"], 2), f"{m['days']['mean']:.0f}"]
            if share:
                cells.append(f"{share[name][key]:.0%}" if np.isfinite(share[name][key]) else "n/a")
            lines.append("| " + " | ".join(cells) + " |")
        days = int(np.nanmax([_num(m[key]["days"]["mean"]) for _, m in rows] + [0]))
        lines += ["", f"SE and ±SE: {SE_METHOD}, {hac_lags(days, h)} lags over {days} days.", ""]
    comps = board.get("comparisons") or []
    if comps:
        lines += ["## Paired differences (same days; reference minus other)", "",
                  "| horizon | reference | other | ΔRankIC | SE (HAC) | t | verdict | Δann. ret net | SE (HAC) | verdict |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for c in comps:
            r, a = c["rank_ic"], c["ann_return_net"]
            lines.append(f"| {c['horizon']} | {c['reference']} | {c['other']} | {r['diff']:+.4f} | {r['se']:.4f} | "
                         f"{r['t']:+.1f} | {r['verdict']} | {a['diff']:+.1%} | {a['se']:.1%} | {a['verdict']} |")
        lines.append("")
    lines += format_decomposition(board.get("decomposition"), board.get("horizons", []))
    lines += [f"RankIC: mean daily Spearman correlation; SE: {SE_RULE} "
              "(daily values overlap by h − 1 days at horizon h); t = mean/SE. Sharpe: annualised quintile "
              f"long-short (staggered sub-books for h > 1), {lag_text(lag)}; ±SE: Lo (2002) with the HAC variance "
              "of the mean. A difference is called real only beyond 2 HAC SE of the paired daily difference. "
              "See docs/evaluation.md.", ""]
    return "\n".join(lines)
