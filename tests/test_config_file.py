"""``load_config(config_file=...)`` / ``atft train --config``: defaults < file < env switches < overrides."""

import pytest
import yaml

from atft.config import load_config, save_config
from atft.errors import InputError


def test_file_over_defaults_under_env_and_overrides(tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump({"model": {"hidden_size": 32, "dropout": 0.2},
                                    "train": {"loss": {"variance_penalty_weight": 0.05}}}))
    cfg = load_config(["model.dropout=0.3"], environ={}, config_file=path)
    assert cfg.model.hidden_size == 32 and cfg.model.dropout == 0.3
    assert cfg.train.loss.variance_penalty_weight == 0.05 and cfg.model.gat.heads == 4  # untouched default
    env = load_config([], environ={"VARIANCE_PENALTY_WEIGHT": "0.02"}, config_file=path)
    assert env.train.loss.variance_penalty_weight == 0.02


def test_a_run_config_round_trips(tmp_path):
    cfg = load_config(["model.hidden_size=48", "data.lookback=30"], environ={})
    path = tmp_path / "config.yaml"
    save_config(cfg, path)  # what every run folder holds (resolved)
    again = load_config([], environ={}, config_file=path)
    assert again.model.hidden_size == 48 and again.model.lookback == 30


@pytest.mark.parametrize(("text", "message"), [
    ("model:\n  hidden_sise: 32\n", "hidden_sise"),
    ("- just\n- a list\n", "not a mapping"),
    ("model: {hidden_size: [\n", "not valid YAML"),
])
def test_bad_config_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_config([], environ={}, config_file=path)


def test_missing_config_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_config([], environ={}, config_file=tmp_path / "nope.yaml")
