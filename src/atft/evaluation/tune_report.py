"""The report section of an ``atft tune`` folder: the study, its best trial, the trials and Optuna's plots.

Reads only the folder's files (``tune.json``, ``trials.parquet`` and the PNGs ``atft tune`` wrote), so a
report can be built on a machine that cannot reach the study's storage.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import polars as pl

TUNE_PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "slice")


def is_tune_folder(path: Path) -> bool:
    return (path / "tune.json").is_file() and (path / "trials.parquet").is_file()


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return html.escape("" if value is None else str(value))


def trials_table(frame: pl.DataFrame, limit: int = 20) -> str:
    """The best ``limit`` finished trials (by value), then the others by number."""
    params = [c for c in frame.columns if c.startswith("param:")]
    cols = ["number", "state", "value", *[c for c in frame.columns if c.startswith("rank_ic_fold")],
            "duration_s", *params]
    ranked = frame.sort(["value", "number"], descending=[True, False], nulls_last=True).head(limit)
    head = "".join(f"<th>{html.escape(c.removeprefix('param:'))}</th>" for c in cols)
    rows = "".join("<tr>" + "".join(f"<td>{_cell(row[c])}</td>" for c in cols) + "</tr>"
                   for row in ranked.select(cols).iter_rows(named=True))
    return f"<table><tr>{head}</tr>{rows}</table>"


def tune_section(path: Path) -> tuple[str, str, list[tuple[str, bytes]]]:
    """Title, HTML of the study summary and trials, and the plots ``[(name, png)]`` of a tune folder."""
    summary = json.loads((path / "tune.json").read_text())
    frame = pl.read_parquet(path / "trials.parquet")
    states = ", ".join(f"{n} {s.lower()}" for s, n in summary.get("trials", {}).items() if n)
    folds = summary.get("fold_splits") or []
    fold_text = "; ".join(f"fold {k}: train {f['train']['first']}…{f['train']['last']}, validation "
                          f"{f['val']['first']}…{f['val']['last']} ({f['val']['days']} days)"
                          for k, f in enumerate(folds))
    test = summary.get("test_split_never_used") or {}
    parts = [f"<p>Study <b>{html.escape(summary['study'])}</b> at {html.escape(summary['storage'])}; "
             f"dataset {html.escape(summary['dataset'])}; space {html.escape(summary['space'])}; trials: "
             f"{html.escape(states)}. Objective: mean validation RankIC at {summary['primary_horizon']} over "
             f"{len(folds)} fold(s) ({html.escape(fold_text)}). The test split ({test.get('first')}…"
             f"{test.get('last')}, {test.get('days')} days) was not read by the search.</p>"]
    best = summary.get("best")
    if best:
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_cell(v)}</td></tr>" for k, v in best["params"].items())
        values = ", ".join(f"{v:.4f}" for v in best.get("fold_values") or [])
        parts.append(f"<h2>Best trial</h2><p>Trial {best['number']}: mean validation RankIC "
                     f"{best['value']:.4f} (per fold: {values}; days {best.get('fold_days')}). "
                     f"<code>best.yaml</code> trains it with <code>atft train --config best.yaml</code>.</p>"
                     f"<table><tr><th>parameter</th><th>value</th></tr>{rows}</table>")
    else:
        parts.append("<h2>Best trial</h2><p>No trial completed.</p>")
    default = summary.get("default_trial")
    if default:
        values = ", ".join(f"{v:.4f}" for v in default.get("fold_values") or [])
        parts.append(f"<p>The base config (trial 0, enqueued as the yardstick): mean validation RankIC "
                     f"{default['value']:.4f} (per fold: {values}).</p>")
    parts.append(f"<h2>Trials</h2>{trials_table(frame)}")
    figures = [(f"tune-{name}", (path / f"{name}.png").read_bytes()) for name in TUNE_PLOTS
               if (path / f"{name}.png").is_file()]
    return f"Hyper-parameter search — {summary['study']}", "".join(parts), figures
