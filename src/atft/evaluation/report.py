"""``atft report``: one self-contained HTML file (PNG figures base64-embedded) for a run or compare folder.

A tune folder (``atft tune``) gets the search section instead: study, best trial, trials table and
Optuna's plots (optimisation history, fANOVA importances, parallel coordinates, slice), then the refit
leaderboard when there is one. Run and compare folders get: summary table (days, cost, SE, t), paired differences (a difference is only called real
beyond two standard errors), cumulative long-short return vs baselines, daily RankIC and its
cumulative sum, IC by horizon, mean return by prediction quintile, training/validation curves,
gradient norms per module, degeneracy resets and feature importance.
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
from atft.evaluation.leaderboard import _num, seed_mean_series
from atft.evaluation.metrics import quantile_mean_returns
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

    if not (path / "evaluation_test.json").is_file():
        evaluate(run_dir=path, split="test")
    result = json.loads((path / "evaluation_test.json").read_text())
    board = {key: result[key] for key in ("models", "comparisons", "cost_bps", "dataset")}
    board.update({"test_days": result["days"], "test_first": result["first"], "test_last": result["last"],
                  "horizons": [int(h.rstrip("d")) for h in result["metrics"]], "folds": 0, "seeds": 1})
    return {"kind": "run", "board": board, "daily": pl.read_parquet(path / "daily_test.parquet"),
            "main_run": path, "title": f"Run {path.name}"}


def summary_table(board: dict) -> str:
    rows = []
    for h in board["horizons"]:
        for name, by_h in board["models"].items():
            m = by_h.get(f"{h}d", {})

            def g(key, m=m):
                return _num(m.get(key, {}).get("mean"))

            rows.append(f"<tr><td>{html.escape(name)}</td><td>{h}d</td><td>{g('rank_ic'):.4f}</td>"
                        f"<td>{g('rank_ic_se'):.4f}</td><td>{g('tstat'):.1f}</td><td>{g('ic'):.4f}</td>"
                        f"<td>{g('sharpe'):.2f}</td><td>{g('sharpe_net'):.2f}</td><td>{g('sharpe_se'):.2f}</td>"
                        f"<td>{g('sharpe_net_beta_neutral'):.2f}</td><td>{g('turnover'):.2f}</td>"
                        f"<td>{g('days'):.0f}</td></tr>")
    head = ("<tr><th>model</th><th>h</th><th>RankIC</th><th>SE</th><th>t</th><th>IC</th><th>Sharpe</th>"
            "<th>Sharpe net</th><th>±SE</th><th>net β-neutral</th><th>turnover</th><th>days</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


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
                     f"ΔRankIC {diff:+.4f} ± {se:.4f} (t = {t:+.1f}, {r['days']} paired days)</li>")
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
    figs = [("cumulative_long_short", plots.lines_plot(
        cum, f"Cumulative long-short return, {h}d quintile book, net of {board['cost_bps']:g} bps",
        "cumulative return (sum)", highlight="atft"))]
    main = "atft" if "atft" in models else (models[0] if models else None)
    ric = seed_mean_series(daily, main, h, "rank_ic") if main else np.array([])
    figs.append(("daily_rank_ic", plots.rank_ic_plot(dates if main else dates[:0], ric,
                                                    f"Daily RankIC of {main} ({h}d) and its cumulative sum")))
    groups = [f"{x}d" for x in board["horizons"]]
    bars = {m: (np.array([_num(board["models"][m].get(g, {}).get("rank_ic", {}).get("mean")) for g in groups]),
                np.array([_num(board["models"][m].get(g, {}).get("rank_ic_se", {}).get("mean")) for g in groups]))
            for m in models}
    figs.append(("ic_by_horizon", plots.grouped_bars(groups, bars, "Mean RankIC by horizon (±2 SE)", "RankIC")))
    figs.append(("quintile_returns", quintile_figure(ctx.get("main_run"))))
    return figs


def quintile_figure(run: Path | None) -> bytes:
    """Mean forward return by prediction quintile of the main run's test predictions (monotonicity)."""
    from atft.evaluation.predictions import frame_to_arrays, read_predictions

    path = run / "predictions_test.parquet" if run else None
    if path is None or not path.is_file():
        return plots.grouped_bars([], {}, "Mean return by prediction quintile", "", "no predictions_test.parquet")
    arrays = frame_to_arrays(read_predictions(path))
    values = {}
    for k, h in enumerate(arrays.horizons):
        mean, se, _ = quantile_mean_returns(arrays.pred[..., k], arrays.target[..., k])
        values[f"{h}d"] = (mean, se)
    return plots.grouped_bars([f"Q{i + 1}" for i in range(5)], values,
                              "Mean forward return by prediction quintile (Q5 = highest, ±2 SE)", "mean return")


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
    return (f"<p>{meta}</p><h2>Summary</h2>{summary_table(board)}<h2>Is the difference real?</h2>"
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
