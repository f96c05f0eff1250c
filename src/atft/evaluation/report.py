"""``atft report``: one self-contained HTML file (PNG figures base64-embedded) for a run or compare folder.

Sections: summary table (days, cost, SE, t), on a planted market the decomposition (RankIC vs each
oracle component, table and bars), paired differences (a difference is only called real
beyond two standard errors), cumulative long-short return vs baselines, daily RankIC and its
cumulative sum, IC by horizon, mean return by prediction quintile, training/validation curves,
gradient norms per module, degeneracy resets and feature importance.

A tune folder (``atft tune``) gets the search section instead: study, best trial, trials table and
Optuna's plots (optimisation history, fANOVA importances, parallel coordinates, slice), then the refit
leaderboard when there is one.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path

import numpy as np
import polars as pl

from atft.errors import InputError
from atft.evaluation import plots
from atft.evaluation.leaderboard import _num, lag_text, seed_mean_series
from atft.evaluation.metrics import (
    SE_RULE,
    TRADEABLE_LAG,
    hac_lags,
    lag_label,
    quantile_mean_returns,
    quantile_spread,
)
from atft.evaluation.run_files import (
    degeneracy_events,
    grad_norm_history,
    read_jsonl,
    run_log_path,
)
from atft.io_utils import write_text

log = logging.getLogger(__name__)


def _load_compare(path: Path) -> dict:
    board = json.loads((path / "leaderboard.json").read_text())
    runs = sorted(p.parent for p in path.glob("atft*/seed*/**/metrics.json"))
    main = next((r for r in runs if r.relative_to(path).parts[0] == "atft"), runs[0] if runs else None)
    return {"kind": "compare", "board": board, "daily": pl.read_parquet(path / "daily.parquet"),
            "main_run": main, "title": f"Comparison — {board.get('dataset', path)}"}


def _load_run(path: Path) -> dict:
    from atft.evaluation.evaluate import evaluate

    saved = path / "evaluation_test.json"
    if not saved.is_file() or "lag" not in json.loads(saved.read_text()):  # older files: lag-0 books, iid SEs
        evaluate(run_dir=path, split="test")
    result = json.loads(saved.read_text())
    board = {key: result[key] for key in ("models", "comparisons", "cost_bps", "dataset")}
    board["lag"] = result.get("lag", TRADEABLE_LAG)
    board.update({"test_days": result["days"], "test_first": result["first"], "test_last": result["last"],
                  "horizons": [int(h.rstrip("d")) for h in result["metrics"]], "folds": 0, "seeds": 1})
    return {"kind": "run", "board": board, "daily": pl.read_parquet(path / "daily_test.parquet"),
            "main_run": path, "title": f"Run {path.name}"}


def _se_lags(board: dict, h: int) -> int:
    """HAC lags of horizon ``h``'s RankIC SE as scored (its days), else from the board's test days."""
    for by_h in board["models"].values():
        lags = _num(by_h.get(f"{h}d", {}).get("se_lags", {}).get("mean"))
        if np.isfinite(lags):
            return int(lags)
    return hac_lags(int(board.get("test_days") or 0), h)


def summary_table(board: dict) -> str:
    """Every model and horizon; RankIC also against the lag-1 forward return, the books at the board's lag."""
    rows = []
    for h in board["horizons"]:
        for name, by_h in board["models"].items():
            m = by_h.get(f"{h}d", {})

            def g(key, m=m):
                return _num(m.get(key, {}).get("mean"))

            rows.append(f"<tr><td>{html.escape(name)}</td><td>{h}d</td><td>{g('rank_ic'):.4f}</td>"
                        f"<td>{g('rank_ic_se'):.4f}</td><td>{g('tstat'):.1f}</td>"
                        f"<td>{g('rank_ic_lag1'):.4f} ± {g('rank_ic_lag1_se'):.4f}</td><td>{g('ic'):.4f}</td>"
                        f"<td>{g('sharpe'):.2f}</td><td>{g('sharpe_net'):.2f}</td><td>{g('sharpe_se'):.2f}</td>"
                        f"<td>{g('sharpe_net_beta_neutral'):.2f}</td><td>{g('turnover'):.2f}</td>"
                        f"<td>{g('days'):.0f}</td></tr>")
    lag = int(board.get("lag", TRADEABLE_LAG))
    head = ("<tr><th>model</th><th>h</th><th>RankIC</th><th>SE</th><th>t</th><th>RankIC vs lag-1 forward return</th>"
            f"<th>IC</th><th>Sharpe({lag_label(lag)})</th><th>Sharpe net</th><th>±SE</th><th>net β-neutral</th>"
            "<th>turnover</th><th>days</th></tr>")
    lags = ", ".join(f"{h}d: {_se_lags(board, h)}" for h in board["horizons"])
    note = (f"<p>SE, ±SE and t: {SE_RULE} ({lags}); the Sharpe ±SE is "
            f"Lo (2002) with that variance of the mean. Books: {lag_text(lag)}. RankIC is against "
            "target_{h}d (from the close of t); the lag-1 forward return runs from the close of t+1 to t+1+h, "
            "the part of the move a lag-1 book can still earn.</p>")
    return f"<table>{head}{''.join(rows)}</table>{note}"


def decomposition_table(board: dict) -> str:
    """RankIC ± SE of every model against each planted oracle component, per horizon ('' if none)."""
    dec = board.get("decomposition")
    if not dec:
        return ""
    parts = dec["components"]
    head = "<tr><th>model</th><th>h</th>" + "".join(f"<th>{html.escape(p)}</th>" for p in parts) + "</tr>"
    rows = []
    for h in board["horizons"]:
        for name, by_h in dec["models"].items():
            cells = "".join(f"<td>{_num(by_h[f'{h}d'][p]['rank_ic']):.3f} ± {_num(by_h[f'{h}d'][p]['se']):.3f}</td>"
                            for p in parts)
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{h}d</td>{cells}</tr>")
    return ("<h2>Decomposition: RankIC vs each planted component</h2><p>Mean daily Spearman correlation of each "
            "model's predictions with each planted part of the oracle (total = the oracle), same days and stocks, "
            f"± SE.</p><table>{head}{''.join(rows)}</table>")


def decomposition_figure(board: dict) -> bytes:
    """Grouped bars: RankIC (±2 SE) of every model against each planted component, primary horizon."""
    dec, h = board.get("decomposition"), _primary(board)
    parts = dec["components"] if dec else []
    bars = {name: (np.array([_num(by_h[f"{h}d"][p]["rank_ic"]) for p in parts]),
                   np.array([_num(by_h[f"{h}d"][p]["se"]) for p in parts])) for name, by_h in (dec or {}).get(
        "models", {}).items()}
    return plots.grouped_bars(parts, bars, f"RankIC vs each planted component ({h}d, ±2 SE)", "RankIC",
                              "no planted components: a synthetic dataset's oracle sidecar has them")


def significance_lines(comparisons: list[dict]) -> str:
    """One sentence per paired comparison; 'higher'/'lower' only beyond 2 SE."""
    items = []
    for c in comparisons:
        r = c["rank_ic"]
        diff, se, t = _num(r["diff"]), _num(r["se"]), _num(r["t"])
        if r["verdict"] in ("higher", "lower"):
            text = f"RankIC {r['verdict']} than {c['other']} beyond 2 SE"
        else:
            text = f"not distinguishable from {c['other']} ({r['verdict']})"
        items.append(f"<li>{html.escape(c['horizon'])}: {html.escape(c['reference'])} — {html.escape(text)}: "
                     f"ΔRankIC {diff:+.4f} ± {se:.4f} (HAC SE; t = {t:+.1f}, {r['days']} paired days)</li>")
    return "<ul>" + "".join(items) + "</ul>" if items else "<p>No second model to compare with.</p>"


def _primary(board: dict) -> int:
    return 1 if 1 in board["horizons"] else board["horizons"][0]


def performance_figures(ctx: dict) -> list[tuple[str, bytes]]:
    board, daily = ctx["board"], ctx["daily"]
    h = _primary(board)
    part = daily.filter(pl.col("horizon") == h)
    dates = np.sort(part["Date"].unique().to_numpy())
    models = [m for m in board["models"] if m in set(part["model"].unique().to_list())]
    cum = {m: (dates, np.nancumsum(seed_mean_series(daily, m, h, "ls_net"))) for m in models}
    if "ls_net_beta_neutral" in part.columns and "atft" in models:
        cum["atft (β-neutral)"] = (dates, np.nancumsum(seed_mean_series(daily, "atft", h, "ls_net_beta_neutral")))
    lag = lag_label(int(board.get("lag", TRADEABLE_LAG)))
    figs = [("cumulative_long_short", plots.lines_plot(
        cum, f"Cumulative long-short return, {h}d quintile book ({lag}), net of {board['cost_bps']:g} bps",
        "cumulative return (sum)", highlight="atft"))]
    main = "atft" if "atft" in models else (models[0] if models else None)
    ric = seed_mean_series(daily, main, h, "rank_ic") if main else np.array([])
    figs.append(("daily_rank_ic", plots.rank_ic_plot(dates if main else dates[:0], ric,
                                                    f"Daily RankIC of {main} ({h}d) and its cumulative sum")))
    groups = [f"{x}d" for x in board["horizons"]]
    bars = {m: (np.array([_num(board["models"][m].get(g, {}).get("rank_ic", {}).get("mean")) for g in groups]),
                np.array([_num(board["models"][m].get(g, {}).get("rank_ic_se", {}).get("mean")) for g in groups]))
            for m in models}
    figs.append(("ic_by_horizon", plots.grouped_bars(groups, bars, "Mean RankIC by horizon (±2 HAC SE)", "RankIC")))
    figs.append(("quintile_returns", quintile_figure(ctx.get("main_run"))))
    figs.append(("decomposition", decomposition_figure(board)))
    return figs


def quintile_figure(run: Path | None) -> bytes:
    """Mean forward return by prediction quintile of the main run's test predictions (monotonicity)."""
    from atft.evaluation.predictions import frame_to_arrays, read_predictions

    path = run / "predictions_test.parquet" if run else None
    if path is None or not path.is_file():
        return plots.grouped_bars([], {}, "Mean return by prediction quintile", "", "no predictions_test.parquet")
    arrays = frame_to_arrays(read_predictions(path))
    values, spreads = {}, []
    for k, h in enumerate(arrays.horizons):
        mean, se, _ = quantile_mean_returns(arrays.pred[..., k], arrays.target[..., k], horizon=h)
        values[f"{h}d"] = (mean, se)
        s = quantile_spread(arrays.pred[..., k], arrays.target[..., k], horizon=h)
        spreads.append(f"{h}d {s['mean']:+.4f} ± {s['se']:.4f}")
    return plots.grouped_bars([f"Q{i + 1}" for i in range(5)], values,
                              "Mean forward return by prediction quintile (Q5 = highest, ±2 HAC SE)\n"
                              f"Q5 − Q1 spread: {'; '.join(spreads)}", "mean return")


def training_figures(run: Path | None) -> list[tuple[str, bytes]]:
    records = read_jsonl(run / "metrics.jsonl") if run else []
    epochs = np.array([r["epoch"] for r in records])
    losses = {k: (epochs, np.array([_num(r.get(k)) for r in records])) for k in ("train_loss", "val_loss")
              if records}
    val_ric = {}
    for key in sorted({h for r in records for h in (r.get("val") or {})}):
        val_ric[f"val RankIC {key}"] = (epochs, np.array([_num((r.get("val") or {}).get(key, {}).get("rank_ic"))
                                                          for r in records]))
    missing = "no metrics.jsonl in the run folder"
    figs = [("training_curves", plots.lines_plot(losses, "Training and validation loss", "loss", missing)),
            ("validation_rank_ic", plots.lines_plot(val_ric, "Validation RankIC by epoch", "RankIC", missing))]
    steps, norms = grad_norm_history(run, run_log_path(run) if run else None)
    series = {name: (steps[name], values) for name, values in norms.items()}
    figs.append(("gradient_norms", plots.lines_plot(
        series, "Gradient norm per module", "L2 norm", logy=True,
        empty="no gradient-monitor records: train with ENABLE_GRAD_MONITOR=1")))
    resets = np.array([_num(r.get("resets")) for r in records])
    events = degeneracy_events(run_log_path(run) if run else None)
    figs.append(("degeneracy_resets", plots.grouped_bars(
        [str(e) for e in epochs], {"resets": (resets, np.zeros_like(resets))},
        f"Degeneracy-guard resets per epoch ({len(events)} [DEGENERACY-GUARD] log lines)", "resets", missing)))
    return figs


def importance_figure(run: Path | None) -> bytes:
    path = run / "feature_importance.json" if run else None
    if path is None or not path.is_file():
        return plots.barh_plot([], np.array([]), "Feature importance", "no feature_importance.json in the run")
    weights = json.loads(path.read_text())["features"]
    top = sorted(weights.items(), key=lambda kv: -kv[1])[:25]
    return plots.barh_plot([k for k, _ in top], np.array([v for _, v in top]),
                           "Feature importance: mean variable-selection weight on the test split (top 25)")


def figures_html(figures: list[tuple[str, bytes]]) -> str:
    return "".join(f'<h3>{html.escape(name.replace("_", " ").replace("-", " "))}</h3><img id="plot-{name}" '
                   f'alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                   for name, png in figures)


def page(title: str, body: str) -> str:
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


def board_body(ctx: dict, figures: list[tuple[str, bytes]]) -> str:
    """Leaderboard summary, paired differences and figures of a run or compare context."""
    board = ctx["board"]
    meta = (f"Test days: {board.get('test_days')} ({board.get('test_first')} … {board.get('test_last')}); "
            f"walk-forward folds: {board.get('folds') or 'none'}; seeds: {board.get('seeds')}; one-way cost "
            f"{board.get('cost_bps')} bps; dataset {html.escape(str(board.get('dataset')))}.")
    return (f"<p>{meta}</p><h2>Summary</h2>{summary_table(board)}{decomposition_table(board)}"
            "<h2>Is the difference real?</h2>"
            "<p>Paired over the same days; a difference inside two standard errors is reported as not "
            f"distinguishable.</p>{significance_lines(board.get('comparisons') or [])}<h2>Figures</h2>"
            f"{figures_html(figures)}")


def render(ctx: dict, figures: list[tuple[str, bytes]]) -> str:
    return page(ctx["title"], board_body(ctx, figures))


def render_tune(path: Path) -> str:
    """A tune folder: the search section, then the refit leaderboard when ``--refit`` wrote one."""
    from atft.evaluation.tune_report import tune_section

    title, body, figures = tune_section(path)
    body += f"<h2>Search plots</h2>{figures_html(figures)}"
    refit = path / "refit"
    if (refit / "leaderboard.json").is_file():
        ctx = _load_compare(refit)
        tuned = refit / "atft_tuned" / "seed0"
        ctx["main_run"] = tuned if tuned.is_dir() else ctx["main_run"]
        body += ("<h2>Refit: the best config, the default and the baselines on the test split</h2>"
                 + board_body(ctx, performance_figures(ctx)))
    else:
        body += "<p>No refit: run <code>atft tune ... --refit</code> to score the best config on the test split.</p>"
    return page(title, body)


def build_report(path, out=None) -> Path:
    """Write ``report.html`` for a run, compare or tune folder; returns its path."""
    from atft.evaluation.tune_report import is_tune_folder

    path = Path(path)
    out = Path(out) if out else path / "report.html"
    if is_tune_folder(path):
        write_text(out, render_tune(path))
        return out
    if (path / "leaderboard.json").is_file():
        ctx = _load_compare(path)
    elif (path / "config.yaml").is_file() and (path / "metrics.json").is_file():
        ctx = _load_run(path)
    else:
        raise InputError(f"{path} is neither a compare folder (leaderboard.json), a tune folder (tune.json) "
                         f"nor a run folder (config.yaml + metrics.json)")
    run = ctx["main_run"]
    figures = performance_figures(ctx) + training_figures(run) + [("feature_importance", importance_figure(run))]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, render(ctx, figures))
    return out
