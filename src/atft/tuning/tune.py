"""``tune(...)``: an Optuna study over the search space, scored on validation days only; outputs and refit.

Order of work, so that bad input writes nothing: compose the config, read and check the space (keys,
ranges), reach the storage and compare the stored space of an existing study, load the panel and cut
the folds, try every categorical value on one batch; only then create the folder and the study.

``--trials N`` is the number of trials this process runs (Optuna's ``n_trials``): two processes on one
study with 3 and 4 run 7 between them, and rerunning a command adds its N trials to the study it resumes.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import optuna
from omegaconf import OmegaConf

from atft.errors import InputError
from atft.io_utils import write_json
from atft.tuning.objective import Objective
from atft.tuning.outputs import write_outputs
from atft.tuning.space import SearchSpace, check_choices, dotlist, load_space
from atft.tuning.storage import default_storage, existing_space, fail_dead_trials, mask_url, open_storage

log = logging.getLogger("atft.tuning")


def _setup_logging(out: Path) -> list[logging.Handler]:
    """``[TUNE]`` lines to stdout and ``OUT/tune.log``; Optuna's and Lightning's per-trial chatter off."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our one line per trial replaces Optuna's
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available" per fold
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat
    tune_log = logging.getLogger("atft.tuning")
    tune_log.setLevel(logging.INFO)
    tune_log.propagate = False
    handlers = [logging.StreamHandler(sys.stdout), logging.FileHandler(out / "tune.log", encoding="utf-8")]
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        tune_log.addHandler(handler)
    return handlers


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _short(key: str) -> str:
    """``train.optimizer.lr`` -> ``optimizer.lr``; ``model.adaptive_norm`` -> ``adaptive_norm``."""
    parts = key.split(".")
    return ".".join(parts[-2:]) if len(parts) > 2 else parts[-1]


def progress_line(study: optuna.Study, trial: optuna.trial.FrozenTrial, defaults: dict) -> str:
    """``[TUNE] trial 3 COMPLETE value 0.0412 | best 0.0455 (trial 1) | changed: lr=0.0003 ...``."""
    steps = trial.intermediate_values
    if trial.state == optuna.trial.TrialState.PRUNED and steps:
        value = f"at step {max(steps)} (RankIC {steps[max(steps)]:.4f})"
    else:
        value = f"value {trial.value:.4f}" if trial.value is not None else "no value"
    try:
        best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
    except ValueError:
        best = "best none yet"
    changed = [f"{_short(k)}={_fmt(v)}" for k, v in trial.params.items() if defaults.get(k) != v]
    return (f"[TUNE] trial {trial.number} {trial.state.name} {value} | {best} | changed: "
            f"{' '.join(changed) or 'none (the defaults)'}")


def _check_space_matches(url: str, study: str, space: SearchSpace) -> None:
    stored = existing_space(url, study)
    if stored and stored != space.as_json():
        raise InputError(f"study {study!r} at {mask_url(url)} was created with a different search space than "
                         f"{space.path}; use the same --space or another --study")


def _make_study(url: str, name: str, space: SearchSpace, seed: int) -> optuna.Study:
    s = space.settings
    storage = open_storage(url, int(s.heartbeat_interval), int(s.grace_period))
    if not url.startswith("sqlite"):
        seed += os.getpid()  # processes sharing a server study must not draw the same random start
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(s.startup_trials))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=int(s.pruner_startup_trials),
                                          n_warmup_steps=int(s.pruner_warmup_epochs))
              if s.pruner == "median" else optuna.pruners.NopPruner())
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                sampler=sampler, pruner=pruner)
    if not study.user_attrs.get("space"):
        study.set_user_attr("space", space.as_json())
    return study


def enqueue_defaults(study: optuna.Study, space: SearchSpace, defaults: dict) -> dict:
    """A new study's first trial is the base config (its values that lie inside the space): the yardstick."""
    if study.trials or not bool(space.settings.enqueue_default):
        return {}
    params = {}
    for key, dist in space.params.items():
        try:
            if dist._contains(dist.to_internal_repr(defaults[key])):
                params[key] = defaults[key]
        except (ValueError, TypeError):
            continue  # e.g. a default that is not one of the choices
    study.enqueue_trial(params, skip_if_exists=True)
    return params


def tune(data_path, trials: int, study: str | None = None, storage: str | None = None, folds: int | None = None,
         timeout: float | None = None, space=None, out=None, refit: bool = False, overrides=()) -> dict:
    """Run ``trials`` trials of the study; write the outputs (and the refit leaderboard); return tune.json.

    Args:
        data_path: ML dataset parquet. trials: trials this process runs (>= 1).
        study: study name (default ``atft``). storage: SQLAlchemy URL (default ``sqlite:///OUT/study.db``).
        folds: walk-forward folds over the days before the test split (None: the config's split).
        timeout: stop starting trials after this many seconds. space: space YAML (default the shipped one).
        out: output folder (default ``runs/tune/<study>``). refit: train the best config, score the test split.
        overrides: Hydra ``key=value`` applied to every trial (and to the default config of the refit).
    """
    from atft.config import load_config
    from atft.data.panel import load_panel
    from atft.tuning.objective import tuning_folds

    if int(trials) < 1:
        raise InputError(f"--trials {trials}: expected at least 1")
    if folds is not None and int(folds) < 1:
        raise InputError(f"--folds {folds}: expected at least 1")
    name = study or "atft"
    out = Path(out) if out else Path("runs") / "tune" / name
    cfg = load_config([f"data.path={data_path}", *overrides])
    search = load_space(space, cfg)
    url = storage or default_storage(out)
    _check_space_matches(url, name, search)
    panel = load_panel(cfg.data.path, cfg.data, model_cfg=cfg.model)
    splits, _ = tuning_folds(panel, cfg, folds)
    check_choices(search, cfg, panel)
    seed = int(search.settings.seed if search.settings.seed is not None else cfg.seed)

    out.mkdir(parents=True, exist_ok=True)
    handlers = _setup_logging(out)
    try:
        study_obj = _make_study(url, name, search, seed)
        fail_dead_trials(study_obj)
        defaults = {k: OmegaConf.select(cfg, k) for k in search.params}
        done = sum(t.state.is_finished() for t in study_obj.get_trials(deepcopy=False))
        enqueue_defaults(study_obj, search, defaults)
        log.info("[TUNE] study %r at %s: %d trial(s) in this process, %d fold(s), %d finished before",
                 name, mask_url(url), trials, len(splits), done)
        objective = Objective(cfg, search, panel, folds, out, name)
        study_obj.optimize(objective, n_trials=int(trials), timeout=timeout, catch=(Exception,),
                           callbacks=[lambda s, t: log.info(progress_line(s, t, defaults))],
                           show_progress_bar=sys.stderr.isatty())
        summary = {"study": name, "storage": mask_url(url), "dataset": str(data_path), "space": str(search.path),
                   "folds": folds, "primary_horizon": objective.primary, "sampler_seed": seed,
                   "overrides": list(overrides), **_split_record(panel, splits)}
        summary = write_outputs(study_obj, cfg, out, summary, seed)
        if refit and "best" in summary:
            summary["refit"] = str(refit_best(cfg, summary["best"]["params"], search, Path(data_path), out))
            write_json(out / "tune.json", summary)
        log.info("[TUNE] done: %s; outputs in %s", summary["trials"], out)
        return summary
    finally:
        for handler in handlers:
            logging.getLogger("atft.tuning").removeHandler(handler)
            handler.close()


def _split_record(panel, splits: list) -> dict:
    """The folds' train / validation dates and the test split the search never used."""
    folds = [{k: v for k, v in s.describe(panel.dates).items() if k != "test"} for s in splits]
    return {"folds_used": len(splits), "fold_splits": folds,
            "test_split_never_used": panel.splits.describe(panel.dates)["test"]}


def refit_best(cfg, params: dict, search: SearchSpace, data_path: Path, out: Path) -> Path:
    """Train the best config and the default on the config's training range; test leaderboard with baselines.

    The one time the test split is read: ``compare.run_models`` with ``atft_tuned`` (the reference of the
    paired differences), ``atft_default`` and ``search.refit_models``, written to ``out/refit``.
    """
    from atft.evaluation.compare import run_models

    variants = {"atft_tuned": dotlist(params), "atft_default": []}
    names = [*variants, *list(search.settings.refit_models)]
    run_models(cfg, data_path, names, 1, None, out / "refit", float(cfg.train.eval.cost_bps), variants=variants)
    return out / "refit"
