"""One trial: the drawn parameters trained on every walk-forward fold, scored by validation RankIC only.

Objective = mean over folds of the best checkpoint's validation RankIC at the primary horizon. Each fold
is a full ``atft.training.train.train`` run with the fold's explicit split dates, so it fits its own
scaler and leakage screen on its own training days and keeps the embargo — as ``atft compare --folds``
does. Folds are cut from the days before the config's test split (``tuning_folds``), and every run is
made with the test split sealed (``score_test=False``): the search never sees a test day.

Pruning: :class:`PruningCallback` reports the validation RankIC after every epoch at step
``fold * max_epochs + epoch`` (Optuna's Lightning integration reports ``epoch`` alone, which repeats
across folds) and raises ``optuna.TrialPruned`` when the pruner says so.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import optuna
from omegaconf import DictConfig, OmegaConf

from atft.evaluation.compare import _fold_overrides, fold_splits
from atft.tuning.space import SearchSpace, apply_params
from atft.tuning.storage import mark_owner

log = logging.getLogger("atft.tuning")


class PruningCallback(pl.Callback):
    """Report ``monitor`` to an Optuna trial after each validation epoch; prune when told to.

    Args:
        trial: the running trial.
        monitor: logged metric to report (``val/rank_ic``: the primary horizon's validation RankIC).
        step_offset: added to the epoch (``fold * max_epochs``), so folds report at distinct steps.
    """

    def __init__(self, trial: optuna.Trial, monitor: str = "val/rank_ic", step_offset: int = 0):
        self.trial, self.monitor, self.step_offset = trial, monitor, int(step_offset)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        step = self.step_offset + trainer.current_epoch
        if math.isfinite(value):
            self.trial.report(value, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} ({self.monitor} {value:.4f})")


def tuning_folds(panel, cfg: DictConfig, folds: int | None) -> tuple[list, object]:
    """Folds over the days before the config's test split (minus its embargo), and the view they index.

    ``folds`` None: the config's own train / validation split. Otherwise ``compare``'s walk-forward
    folds laid over the development days only; each fold's train and validation blocks are used, its
    test block is never scored.
    """
    if not folds:
        return [panel.splits], panel
    dev_end = int(panel.splits.test[0]) - panel.splits.embargo  # first day not available to the search
    view = SimpleNamespace(dates=panel.dates[:dev_end], horizons=panel.horizons, splits=None)
    return fold_splits(view, cfg, folds), view


class Objective:
    """Callable objective for ``study.optimize``.

    Args:
        base_cfg: the composed config (``--data-path`` and the command's ``key=value`` applied).
        space: the search space.
        panel: the loaded panel (for the fold dates).
        folds: ``--folds`` (None: the config's own split).
        out: the tune folder; trial runs go to ``out/trials/<number>/fold<k>``.
        study_name: used in run names (log files ``<train.log_dir>/<study>_t<number>_f<k>.log``).
    """

    def __init__(self, base_cfg: DictConfig, space: SearchSpace, panel, folds: int | None, out: Path,
                 study_name: str):
        self.base_cfg, self.space, self.out, self.study_name = base_cfg, space, out, study_name
        self.splits, self.view = tuning_folds(panel, base_cfg, folds)
        self.primary = f"{_primary_horizon(base_cfg, panel.horizons)}d"

    def fold_cfg(self, params: dict, k: int, number: int) -> DictConfig:
        cfg = apply_params(self.base_cfg, params)
        fold = _fold_overrides(self.view, self.splits[k], len(self.splits)) if self.view.splits is None else []
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(fold))
        cfg.run_dir = str((self.out / "trials" / f"{number:04d}" / f"fold{k}").resolve())
        cfg.run_name = f"{self.study_name}_t{number:04d}_f{k}"
        return cfg

    def __call__(self, trial: optuna.Trial) -> float:
        from atft.training.train import train

        mark_owner(trial)
        params = self.space.suggest(trial)
        epochs = int(self.base_cfg.train.trainer.max_epochs)
        values, days, ses = [], [], []
        for k in range(len(self.splits)):
            cfg = self.fold_cfg(params, k, trial.number)
            try:
                result = train(cfg, extra_callbacks=[PruningCallback(trial, "val/rank_ic", k * epochs)],
                               score_test=False)
            finally:
                if not bool(self.space.settings.keep_checkpoints):
                    shutil.rmtree(Path(cfg.run_dir) / "checkpoints", ignore_errors=True)
            val = result["val"][self.primary]
            values.append(val["rank_ic"] if val["rank_ic"] is not None else math.nan)
            days.append(int(val["days"]))
            ses.append(val.get("rank_ic_se"))
            for attr, series in (("fold_values", values), ("fold_days", days), ("fold_se", ses)):
                trial.set_user_attr(attr, series)
        return float(np.mean(values))


def _primary_horizon(cfg: DictConfig, horizons: list[int]) -> int:
    h = int(cfg.train.eval.primary_horizon)
    return h if h in horizons else horizons[0]
