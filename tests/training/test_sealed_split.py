"""``train(score_test=False)``: the test split is sealed (its loader raises) and nothing on it is written."""

import json

import pytest

from atft.data.panel import load_panel
from atft.training.datamodule import PanelDataModule
from atft.training.train import train


def test_sealed_split_raises_and_the_access_log_records_the_others(make_cfg):
    cfg = make_cfg("dm")
    dm = PanelDataModule(cfg, load_panel(cfg.data.path, cfg.data, model_cfg=cfg.model), sealed=("test",))
    dm.setup("fit")
    dm.train_dataloader(), dm.val_dataloader()
    with pytest.raises(RuntimeError, match="test split is sealed"):
        dm.test_dataloader()
    assert dm.access_log == ["train", "val"]


def test_train_without_test_scoring_writes_no_test_output(make_cfg, tmp_path):
    result = train(make_cfg("val_only"), score_test=False)
    run = tmp_path / "val_only"
    assert result["test"] is None and set(result["val"]) == {"1d", "5d"}
    assert json.loads((run / "metrics.json").read_text())["test"] is None
    assert not (run / "predictions_test.parquet").exists() and not (run / "feature_importance.json").exists()
