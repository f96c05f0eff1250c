"""A small study end to end: every output, best.yaml reproduces its trial, pruning, no test day seen."""

from __future__ import annotations

import json

import optuna
import polars as pl
import pytest
import yaml
from tune_helpers import SMALL_SPACE, tiny, write_space

import atft.training.datamodule as datamodule
from atft.cli import main
from atft.config import load_config
from atft.evaluation.report import build_report
from atft.tuning.tune import tune

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def split_log(monkeypatch):
    """Every split any data module builds a loader for, across every trial."""
    seen: list[str] = []
    real = datamodule.PanelDataModule.loader

    def loader(self, split, *args, **kwargs):
        seen.append(split)
        return real(self, split, *args, **kwargs)

    monkeypatch.setattr(datamodule.PanelDataModule, "loader", loader)
    return seen


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory, market):
    folder = tmp_path_factory.mktemp("study")
    space = write_space(folder, SMALL_SPACE.replace("pruner: none", "pruner: none, refit_models: [ridge, momentum_20d]"))
    summary = tune(market, trials=4, study="small", space=space, out=folder / "out", refit=True,
                   overrides=tiny(folder))
    return folder / "out", summary


def test_four_trials_write_every_output(study_dir):
    out, summary = study_dir
    for name in ("study.db", "trials.parquet", "best.yaml", "tune.json", "tune.log",
                 "optimization_history.png", "param_importances.png", "parallel_coordinate.png", "slice.png"):
        assert (out / name).is_file(), name
    for name in summary["plots"]:
        assert (out / name).read_bytes().startswith(PNG)
    frame = pl.read_parquet(out / "trials.parquet")
    assert frame["number"].to_list() == [0, 1, 2, 3] and set(frame["state"]) == {"COMPLETE"}
    assert {"value", "rank_ic_fold0", "val_days_fold0", "duration_s", "param:train.optimizer.lr",
            "param:model.adaptive_norm"} <= set(frame.columns)
    assert frame["value"].to_list() == frame["rank_ic_fold0"].to_list()
    assert (frame["duration_s"] > 0).all() and frame["param:train.optimizer.lr"].n_unique() == 4
    best = frame.sort("value", descending=True).row(0, named=True)
    assert summary["best"]["number"] == best["number"] and summary["best"]["value"] == best["value"]
    saved = json.loads((out / "tune.json").read_text())
    assert saved["trials"]["COMPLETE"] == 4 and saved["default_trial"]["value"] == frame["value"][0]
    assert frame.row(0, named=True)["param:model.adaptive_norm"] == "layernorm"  # trial 0: the base config
    assert frame.row(0, named=True)["param:train.optimizer.lr"] == load_config([]).train.optimizer.lr
    log = (out / "tune.log").read_text()
    assert log.count("[TUNE] trial ") == 4 and "best " in log and "changed: " in log


def test_best_yaml_trains_to_the_best_trial_validation_rank_ic(study_dir, tmp_path):
    out, summary = study_dir
    run = tmp_path / "run"
    assert main(["train", "--config", str(out / "best.yaml"), "--run-dir", str(run),
                 f"train.log_dir={tmp_path / 'logs'}"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val"]["1d"]["rank_ic"] == pytest.approx(summary["best"]["value"], abs=1e-4)
    assert (run / "predictions_test.parquet").is_file()  # a normal run scores the test split


def test_refit_scores_the_best_and_the_default_beside_the_baselines(study_dir):
    out, summary = study_dir
    board = json.loads((out / "refit" / "leaderboard.json").read_text())
    assert board["models_run"] == ["atft_tuned", "atft_default", "ridge", "momentum_20d"]
    assert {c["reference"] for c in board["comparisons"]} == {"atft_tuned"}
    assert board["test_first"] == summary["test_split_never_used"]["first"]
    tuned = yaml.safe_load((out / "refit" / "atft_tuned" / "seed0" / "config.yaml").read_text())
    for key, value in summary["best"]["params"].items():
        node = tuned
        for part in key.split("."):
            node = node[part]
        assert node == pytest.approx(value) if isinstance(value, float) else node == value, key


def test_report_of_a_tune_folder(study_dir):
    out, _ = study_dir
    html = build_report(out).read_text()
    for name in ("optimization_history", "param_importances", "parallel_coordinate", "slice"):
        assert f'id="plot-tune-{name}"' in html
    assert "Best trial" in html and "small" in html
    assert "Refit: the best config" in html and 'id="plot-cumulative_long_short"' in html


def test_search_never_builds_a_test_loader(tmp_path, market, split_log):
    space = write_space(tmp_path)
    tune(market, trials=2, space=space, out=tmp_path / "out", folds=2, overrides=tiny(tmp_path))
    assert split_log and set(split_log) == {"train", "val"}
    assert not list((tmp_path / "out").rglob("predictions_test.parquet"))
    runs = sorted((tmp_path / "out" / "trials").glob("*/fold*/metrics.json"))
    assert len(runs) == 4 and all(json.loads(p.read_text())["test"] is None for p in runs)
    folds = json.loads((tmp_path / "out" / "tune.json").read_text())
    test_first = folds["test_split_never_used"]["first"]
    assert all(f["val"]["last"] < test_first for f in folds["fold_splits"])


def test_hopeless_trials_are_pruned(tmp_path, planted_market):
    """lr 1e-7 barely moves the weights; lr 1e-2 learns the planted signal within an epoch."""
    space = write_space(tmp_path, """
search: {startup_trials: 2, pruner: median, pruner_startup_trials: 1, pruner_warmup_epochs: 0}
space:
  train.optimizer.lr: {choices: [1.0e-2, 1.0e-7]}
""")
    tune(planted_market, trials=6, space=space, out=tmp_path / "out",
         overrides=[*tiny(tmp_path), "data.features.include=[planted,returns_1d,returns_5d]",
                    # the deep model alone: a ridge warm start would already score well before any epoch
                    "model.linear_path.enabled=false", "train.checkpoint.include_init=false"])
    frame = pl.read_parquet(tmp_path / "out" / "trials.parquet")
    pruned = frame.filter(pl.col("state") == "PRUNED")
    assert len(pruned) >= 1 and (pruned["param:train.optimizer.lr"] == 1e-7).all()
    assert (pruned["last_step"] < 1).all()  # stopped after the first epoch of two
    study = optuna.load_study(study_name="atft", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}")
    assert len(study.trials) == 6
