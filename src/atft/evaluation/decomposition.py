"""Decomposition on a planted market: each model's RankIC against each planted part of the oracle.

The synthetic generator's sidecar ``<dataset>.oracle.parquet`` holds the oracle ``oracle_{h}d`` and, per
planted component (reversal, conditional, sector, cluster, regime), ``oracle_<component>_{h}d`` — that
component's expected log-return contribution over the next h days. The mean daily Spearman correlation
of a model's predictions with a component, over the common test support, says how much of that
mechanism the model ranks like the truth: Ridge should find the linear reversal and sector parts but
not the volume-conditional one; only a model that sees its peers can find the hidden-cluster part.
A day on which a component is constant across stocks (e.g. the regime component before its change) has
no RankIC and is left out of that component's mean.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import polars as pl

from atft.errors import InputError
from atft.evaluation.metrics import daily_rank_ic, ic_summary
from atft.evaluation.predictions import frame_to_arrays

TOTAL = "total"
COMPONENT_RE = re.compile(r"^oracle_([a-z][a-z_]*)_(\d+)d$")


def oracle_sidecar(data_path: Path) -> tuple[Path, pl.DataFrame] | None:
    """Path and frame of ``<name>.oracle.parquet`` (or ``<stem>.oracle.parquet``) beside a dataset, if any."""
    names = (data_path.name + ".oracle.parquet", data_path.name.removesuffix(".parquet") + ".oracle.parquet")
    path = next((data_path.with_name(n) for n in names if data_path.with_name(n).is_file()), None)
    if path is None:
        return None
    return path, pl.read_parquet(path).with_columns(pl.col("Code").cast(pl.Utf8), pl.col("Date").cast(pl.Date))


def oracle_components(sidecar: pl.DataFrame | None, panel) -> dict[str, np.ndarray]:
    """``{component: [D, N, H]}`` from the sidecar's ``oracle_<component>_{h}d`` columns (NaN where absent)."""
    if sidecar is None:
        return {}
    found: dict[str, dict[int, str]] = {}
    for col in sidecar.columns:
        if (m := COMPONENT_RE.match(col)) and int(m.group(2)) in panel.horizons:
            found.setdefault(m.group(1), {})[int(m.group(2))] = col
    out = {}
    for name, cols in found.items():
        frame = sidecar.select("Code", "Date", *[pl.col(c).alias(f"pred_{h}d") for h, c in cols.items()])
        out[name] = frame_to_arrays(frame, panel.horizons, dates=panel.dates, codes=panel.codes).pred
    return out


def decompose(preds: dict[str, list[np.ndarray]], parts: dict[str, np.ndarray], support: np.ndarray,
              test_days: np.ndarray, horizons: list[int]) -> dict:
    """Mean daily RankIC (and its SE) of every model's predictions against every oracle part.

    Args:
        preds: ``{model: [pred of seed 0, ...]}``, each ``[D, N, H]``.
        parts: ``{part: [D, N, H]}``, e.g. ``{"total": oracle, "reversal": ..., ...}``.
        support: ``[D_test, N]`` the common support of the test days (every model has a prediction).
        test_days: ``[D_test]`` day indices. horizons: the ``H`` horizons.

    Returns:
        ``{"components": [part, ...], "models": {model: {"1d": {part: {"rank_ic", "se", "days"}}}}}``;
        a model with several seeds is scored on its seed-averaged daily RankIC series.
    """
    table = {}
    for name, runs in preds.items():
        table[name] = {}
        for k, h in enumerate(horizons):
            row = {}
            for part, truth in parts.items():
                target = truth[test_days, :, k]  # [D_test, N]
                daily = [daily_rank_ic(p[test_days, :, k], target, support) for p in runs]  # seeds x [D_test]
                with warnings.catch_warnings():  # a day no seed scored stays NaN, silently
                    warnings.simplefilter("ignore", RuntimeWarning)
                    s = ic_summary(np.nanmean(np.vstack(daily), axis=0) if len(daily) > 1 else daily[0], h)
                row[part] = {"rank_ic": s["mean"], "se": s["se"], "days": s["days"]}
            table[name][f"{h}d"] = row
    return {"components": list(parts), "models": table}


def format_decomposition(decomposition: dict | None, horizons: list[int]) -> list[str]:
    """Markdown section: one table per horizon, a row per model, a column per oracle part (RankIC ± SE)."""
    if not decomposition:
        return []
    parts = decomposition["components"]
    lines = ["## Decomposition: RankIC vs each planted component", "",
             "Mean daily Spearman correlation of each model's predictions with each planted part of the oracle "
             f"(`oracle_<component>_{{h}}d` of the sidecar; `{TOTAL}` = `oracle_{{h}}d`), same days and stocks, "
             "± SE. Days on which a component is constant across stocks are left out of its column.", ""]
    for h in horizons:
        key = f"{h}d"
        lines += [f"### Horizon {key}", "", "| model | " + " | ".join(parts) + " |", "|---" * (len(parts) + 1) + "|"]
        for name, by_h in decomposition["models"].items():
            cells = [_cell(by_h[key][p]) for p in parts]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _cell(stat: dict) -> str:
    mean, se = stat["rank_ic"], stat["se"]
    if mean is None or not np.isfinite(mean):
        return "n/a"
    return f"{mean:.3f} ± {se:.3f}" if se is not None and np.isfinite(se) else f"{mean:.3f}"


def component_rank_ics(data_path) -> dict[str, dict[str, dict[str, float]]]:
    """RankIC of every oracle column of a planted dataset's sidecar against the realised ``target_{h}d``.

    All days of the dataset (no split): how much each planted component alone ranks the realised
    returns. Returns ``{"1d": {"total" | component: {"rank_ic", "se", "days"}}}``.
    """
    data_path = Path(data_path)
    sidecar = oracle_sidecar(data_path)
    if sidecar is None:
        raise InputError(f"{data_path} has no oracle sidecar (build it with --source synthetic)")
    frame = pl.read_parquet(data_path).select("Code", "Date", pl.col("^target_\\d+d$"))
    frame = frame.with_columns(pl.col("Code").cast(pl.Utf8), pl.col("Date").cast(pl.Date))
    frame = frame.join(sidecar[1], on=["Code", "Date"], how="inner").sort("Date", "Code")
    n = frame["Code"].n_unique()
    out = {}
    for col in [c for c in frame.columns if c.startswith("target_")]:
        h = col.removeprefix("target_").removesuffix("d")
        target = frame[col].cast(pl.Float64).fill_null(np.nan).to_numpy().reshape(-1, n)  # [D, N]
        names = {TOTAL: f"oracle_{h}d", **{m.group(1): c for c in frame.columns
                                            if (m := COMPONENT_RE.match(c)) and m.group(2) == h}}
        out[f"{h}d"] = {}
        for name, c in names.items():
            if c in frame.columns:
                x = frame[c].cast(pl.Float64).fill_null(np.nan).to_numpy().reshape(-1, n)  # [D, N]
                varies = np.nanmax(x, axis=1) > np.nanmin(x, axis=1)  # a constant component ranks nothing
                s = ic_summary(daily_rank_ic(x, target, np.broadcast_to(varies[:, None], x.shape)), int(h))
                out[f"{h}d"][name] = {"rank_ic": s["mean"], "se": s["se"], "days": s["days"]}
    return out
