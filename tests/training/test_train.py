"""End-to-end training: overfit, resume equality, run-folder outputs, env switches in config.yaml."""

import json
import re

import lightning.pytorch as pl
import numpy as np
import polars as pl_df
import pytest
import torch
import yaml
from synthetic_panel import write_dataset

from atft.data.panel import load_panel
from atft.errors import InputError
from atft.training.datamodule import PanelDataModule
from atft.training.module import ATFTLightningModule
from atft.training.train import train


def _quiet_trainer(epochs: int, callbacks=()) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                      num_sanity_val_steps=0, callbacks=list(callbacks), limit_val_batches=0)


def test_overfits_a_tiny_panel_to_near_zero_loss(make_cfg, tmp_path):
    data = write_dataset(tmp_path / "tiny.parquet", n_stocks=8, n_days=40, horizons=(1,))
    cfg = make_cfg(data_path=data, **{"model.dropout": 0.0, "model.gat.dropout": 0.0, "model.feature_dropout": 0.0,
                                      "train.optimizer.lr": 0.01,
                                      "train.loss.type": "huber",  # a point loss: the fit reproduces z itself
                                      "train.optimizer.weight_decay": 0.0, "train.batch.train_batch_size": 1000,
                                      "train.degeneracy.enabled": False})
    pl.seed_everything(0)
    panel = load_panel(cfg.data.path, cfg.data, model_cfg=cfg.model)
    module = ATFTLightningModule(cfg, len(panel.feature_names), panel.horizons)
    _quiet_trainer(300).fit(module, datamodule=PanelDataModule(cfg, panel))
    first_loss = 1.0 + 0.1  # an untrained model: point ~1 (unit-variance z) + corr_weight * (1 - ~0)
    assert module.train_loss_epoch < 1e-3 < first_loss
    assert float(module.last_terms["pred_std"][0]) > 0.9  # the fit is a real cross-section, not a constant


def _last_state(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def _epochs(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_two_epochs_equal_one_epoch_resumed_for_one_more(make_cfg, tmp_path):
    extra = {"train.optimizer.schedule_epochs": 2}
    full = train(make_cfg("full", **extra, **{"train.trainer.max_epochs": 2}))
    train(make_cfg("split", **extra, **{"train.trainer.max_epochs": 1}))
    resumed = train(make_cfg("split", **extra, **{"train.trainer.max_epochs": 2}),
                    resume_from=str(tmp_path / "split" / "checkpoints" / "last.ckpt"))
    a, b = _last_state(tmp_path / "full"), _last_state(tmp_path / "split")
    assert a["global_step"] == b["global_step"] > 0
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert _epochs(tmp_path / "full") == _epochs(tmp_path / "split")
    assert full["test"] == resumed["test"]


def test_run_folder_outputs_and_env_switches_in_config(make_cfg, tmp_path):
    environ = {"ENABLE_GRAD_MONITOR": "1", "GRAD_MONITOR_EVERY": "3", "GRAD_MONITOR_WARN_NORM": "1e-9",
               "ENABLE_ENCODER_GRAD_HOOKS": "1", "VARIANCE_PENALTY_WEIGHT": "0.02",
               "DEGENERACY_RESET_SCALE": "0.1", "PRED_STD_FLOOR": "1e-5"}
    cfg = make_cfg("out", environ=environ, **{"train.trainer.max_epochs": 2})
    result = train(cfg)
    run = tmp_path / "out"
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    t = resolved["train"]
    assert t["monitor"]["grad_monitor"] == {"enabled": True, "every": 3, "warn_norm": 1e-9}
    assert t["monitor"]["encoder_grad_hooks"] is True
    assert t["loss"]["variance_penalty_weight"] == 0.02
    assert t["degeneracy"]["reset_scale"] == 0.1 and t["degeneracy"]["pred_std_floor"] == 1e-5
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert not list((run / "checkpoints").glob("*.tmp"))
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    saved = json.loads((run / "metrics.json").read_text())
    assert set(saved["test"]) == {"1d", "5d"} and saved["test"] == json.loads(json.dumps(result["test"]))
    for key in ("ic", "rank_ic", "icir", "sharpe"):
        assert key in saved["test"]["1d"] and key in saved["val"]["1d"]
    assert len(_epochs(run)) == 2
    preds = pl_df.read_parquet(run / "predictions_test.parquet")
    assert preds.columns == ["Code", "Date", "pred_1d", "pred_5d", "target_1d", "target_5d"]
    test = saved["info"]["splits"]["test"]
    assert str(preds["Date"].min()) == test["first"] and str(preds["Date"].max()) == test["last"]
    importance = json.loads((run / "feature_importance.json").read_text())["features"]
    assert set(importance) == {"returns_1d", "sig", "noise_a", "noise_b"}
    assert abs(sum(importance.values()) - 1.0) < 1e-4  # selection weights are a softmax over features
    log = (tmp_path / "_logs" / "out.log").read_text().splitlines()
    epoch_lines = [line for line in log if re.search("Epoch|Val Loss|Sharpe", line)]
    pattern = (r"Epoch (\d+)/2 \| Train Loss [\d.]+ \| Val Loss [\d.]+ \| Sharpe\(lag1\) -?[\d.]+ \| IC -?[\d.]+ \| "
               r"RankIC -?[\d.]+ \| resets 0 \| [\d.]+s")
    assert [re.search(pattern, line).group(1) for line in epoch_lines if "Epoch" in line] == ["1", "2"]


def test_dry_run_writes_no_run_folder(make_cfg, tmp_path):
    out = train(make_cfg("dry"), dry_run_only=True)
    assert out["dry_run"] and np.isfinite(out["loss"]) and not (tmp_path / "dry").exists()


def _test_pred(cfg, state: dict) -> np.ndarray:
    """Test-split predictions ``[S]`` (1d) of the weights ``state``, in the order of predictions_test.parquet."""
    from atft.training.train import _split_predictions

    panel = load_panel(cfg.data.path, cfg.data, model_cfg=cfg.model)
    module = ATFTLightningModule(cfg, len(panel.feature_names), panel.horizons)
    module.load_state_dict(state)
    dm = PanelDataModule(cfg, panel)
    dm.setup("fit")
    dense = _split_predictions(module, dm, "test")[1]
    return dense["pred"][..., 0][dense["valid"]]


def test_weight_averaging_scores_the_average_and_resumes_exactly(make_cfg, tmp_path):
    extra = {"train.weight_averaging.ema_decay": 0.6, "train.checkpoint.include_init": False,
             "train.optimizer.schedule_epochs": 2, "train.early_stopping.patience": 0}
    full = train(make_cfg("ema", **extra, **{"train.trainer.max_epochs": 2}))
    best = torch.load(tmp_path / "ema" / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    raw = best["current_model_state"]  # the optimiser's weights sit beside the average
    assert any(not torch.equal(v, raw[k]) for k, v in best["state_dict"].items())
    cfg = make_cfg("ema", **extra)
    saved = np.sort(pl_df.read_parquet(tmp_path / "ema" / "predictions_test.parquet")["pred_1d"].to_numpy())
    assert np.allclose(np.sort(_test_pred(cfg, best["state_dict"])), saved, atol=1e-6)  # the average was scored
    assert not np.allclose(np.sort(_test_pred(cfg, raw)), saved, atol=1e-4)  # ... not the raw weights
    train(make_cfg("ema_split", **extra, **{"train.trainer.max_epochs": 1}))
    resumed = train(make_cfg("ema_split", **extra, **{"train.trainer.max_epochs": 2}),
                    resume_from=str(tmp_path / "ema_split" / "checkpoints" / "last.ckpt"))
    a, b = _last_state(tmp_path / "ema"), _last_state(tmp_path / "ema_split")
    for key in ("state_dict", "current_model_state"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), (key, name)
    assert full["test"] == resumed["test"]
    with pytest.raises(InputError, match="ema_decay"):
        train(make_cfg("bad", **{"train.weight_averaging.ema_decay": 1.0}))


def test_ema_time_constant_in_epochs_becomes_a_per_step_decay():
    from atft.training.train import ema_decay

    assert ema_decay({}, 100) is None and ema_decay({"ema_decay": None, "ema_epochs": None}, 100) is None
    assert ema_decay({"ema_decay": 0.99}, 7) == 0.99
    # one epoch: 1 - 1/steps, so the time constant is the epoch's length on any panel size
    assert abs(ema_decay({"ema_epochs": 1}, 200) - 0.995) < 1e-12
    assert abs(ema_decay({"ema_epochs": 2}, 15) - (1 - 1 / 30)) < 1e-12
    assert ema_decay({"ema_epochs": 1, "ema_decay": 0.9}, 10) == 0.9  # an explicit decay wins over the default
    for bad in ({"ema_epochs": 0}, {"ema_decay": 1.0}, {"ema_epochs": 1, "ema_decay": 0.0}):
        with pytest.raises(InputError, match="weight_averaging"):
            ema_decay(bad, 10)
