"""What ``atft tune`` writes into its folder: trials.parquet, best.yaml, the plots and tune.json."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import optuna
import polars as pl
from omegaconf import DictConfig, OmegaConf

from atft.io_utils import atomic_write, write_json, write_parquet, write_text
from atft.tuning.space import apply_params

log = logging.getLogger("atft.tuning")

PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "slice")


def _column(values: list):
    """Params of one key across trials: numbers and booleans keep their type, mixed values become text."""
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {int, float} or kinds <= {bool} or kinds <= {str}:
        return values
    return [None if v is None else json.dumps(v) for v in values]


def trials_frame(study: optuna.Study, folds: int) -> pl.DataFrame:
    """One row per trial: number, state, value, ``rank_ic_fold<k>``, days, duration, host, ``param:<key>``."""
    trials = study.get_trials(deepcopy=False)
    keys = sorted({k for t in trials for k in t.params})
    rows = {"number": [t.number for t in trials], "state": [t.state.name for t in trials],
            "value": [t.value if t.value is not None else None for t in trials]}
    for k in range(folds):
        rows[f"rank_ic_fold{k}"] = [_fold(t, "fold_values", k) for t in trials]
        rows[f"rank_ic_se_fold{k}"] = [_fold(t, "fold_se", k) for t in trials]
        rows[f"val_days_fold{k}"] = [_fold(t, "fold_days", k) for t in trials]
    rows["last_step"] = [max(t.intermediate_values) if t.intermediate_values else None for t in trials]
    rows["duration_s"] = [t.duration.total_seconds() if t.duration is not None else None for t in trials]
    rows["started"] = [str(t.datetime_start) if t.datetime_start else None for t in trials]
    rows["host"] = [t.user_attrs.get("host") for t in trials]
    rows["pid"] = [t.user_attrs.get("pid") for t in trials]
    for key in keys:
        rows[f"param:{key}"] = _column([t.params.get(key) for t in trials])
    return pl.DataFrame(rows, strict=False)


def _fold(trial, attr: str, k: int):
    values = trial.user_attrs.get(attr) or []
    return values[k] if k < len(values) else None


def best_config(base_cfg: DictConfig, params: dict) -> DictConfig:
    """The config ``atft train --config`` takes: the base config with the best params, a fresh run folder."""
    cfg = apply_params(base_cfg, params)
    cfg.run_dir, cfg.run_name = None, None
    return cfg


def write_best(path: Path, cfg: DictConfig, study: optuna.Study) -> None:
    best = study.best_trial
    folds = ", ".join(f"{v:.4f}" for v in best.user_attrs.get("fold_values", []))
    header = (f"# atft tune: best trial {best.number} of study {study.study_name!r}: mean validation RankIC "
              f"{best.value:.4f} (folds: {folds})\n# Train it with: atft train --config {path.name}\n")
    write_text(path, header + OmegaConf.to_yaml(cfg))


def _save_axes(axes, path: Path) -> None:
    fig = np.ravel(axes)[0].figure if isinstance(axes, np.ndarray) else axes.figure
    fig.set_size_inches(max(fig.get_size_inches()[0], 10), max(fig.get_size_inches()[1], 4))
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=80))
    import matplotlib.pyplot as plt

    plt.close(fig)


def _placeholder(path: Path, title: str, message: str) -> None:
    from atft.evaluation import plots

    atomic_write(path, lambda p: p.write_bytes(plots.lines_plot({}, title, "", empty=message)))


def write_plots(study: optuna.Study, folder: Path, seed: int) -> list[str]:
    """Optuna's matplotlib plots as PNG; a plot that cannot be drawn yet says why. Returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as ovm

    draw = {
        "optimization_history": lambda: ovm.plot_optimization_history(study),
        "param_importances": lambda: ovm.plot_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed)),
        "parallel_coordinate": lambda: ovm.plot_parallel_coordinate(study),
        "slice": lambda: ovm.plot_slice(study),
    }
    names = []
    for name, fn in draw.items():
        path = folder / f"{name}.png"
        try:
            with warnings.catch_warnings(), matplotlib.rc_context():  # Optuna switches the style to ggplot
                warnings.simplefilter("ignore")
                _save_axes(fn(), path)
        except Exception as exc:  # noqa: BLE001 - e.g. fANOVA needs two finished trials
            _placeholder(path, name.replace("_", " "), f"not drawn: {str(exc).strip().splitlines()[0][:150]}")
        names.append(path.name)
    return names


def write_outputs(study: optuna.Study, base_cfg: DictConfig, out: Path, summary: dict, seed: int) -> dict:
    """Every output of the folder from the study's current state; returns the ``tune.json`` content."""
    folds = int(summary["folds_used"])
    frame = trials_frame(study, folds)
    write_parquet(frame, out / "trials.parquet")
    states = {s: int((frame["state"] == s).sum()) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    summary = dict(summary, trials=states)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        write_best(out / "best.yaml", best_config(base_cfg, best.params), study)
        summary["best"] = {"number": best.number, "value": best.value, "params": best.params,
                           "fold_values": best.user_attrs.get("fold_values"),
                           "fold_days": best.user_attrs.get("fold_days"), "fold_se": best.user_attrs.get("fold_se")}
        first = study.trials[0]
        if first.state == optuna.trial.TrialState.COMPLETE and first.system_attrs.get("fixed_params") is not None:
            summary["default_trial"] = {"number": 0, "value": first.value, "params": first.params,
                                        "fold_values": first.user_attrs.get("fold_values"),
                                        "fold_days": first.user_attrs.get("fold_days"),
                                        "fold_se": first.user_attrs.get("fold_se")}
    else:
        log.warning("[TUNE] no trial completed: no best.yaml")
    summary["plots"] = write_plots(study, out, seed)
    write_json(out / "tune.json", summary)
    return summary
