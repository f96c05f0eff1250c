"""Every shipped config composes and instantiates; env switches map onto keys with the documented precedence."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from atft.cli import main
from atft.config import ENV_SWITCHES, config_dir, load_config
from atft.errors import InputError
from atft.model import MODULE_NAMES, build_model


def test_every_group_option_composes_and_the_model_builds():
    groups = {p.parent.name: p.stem for p in config_dir().glob("*/*.yaml") if p.parent.name not in ("experiment", "tune")}
    assert {"data", "model", "train"} <= set(groups)
    for path in config_dir().glob("*/*.yaml"):
        if path.parent.name in ("experiment", "tune"):  # tune: a search space, not a config group
            continue
        cfg = load_config([f"{path.parent.name}={path.stem}"], environ={})
        assert OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    cfg = load_config([], environ={})
    for norm in ("layernorm", "fan", "san", "fan_san", "revin", "none"):
        cfg.model.adaptive_norm = norm
        model = build_model(cfg.model, n_features=7, horizons=[1, 5])
        assert all(hasattr(model, name) for name in MODULE_NAMES)


def test_env_switches_override_yaml_and_explicit_overrides_override_env():
    environ = {"ENABLE_GRAD_MONITOR": "1", "GRAD_MONITOR_EVERY": "500", "GRAD_MONITOR_WARN_NORM": "1e-9",
               "ENABLE_ENCODER_GRAD_HOOKS": "true", "VARIANCE_PENALTY_WEIGHT": "0.02",
               "DEGENERACY_RESET_SCALE": "0.1", "PRED_STD_FLOOR": "1e-5"}
    assert set(environ) == set(ENV_SWITCHES)
    cfg = load_config([], environ=environ)
    assert cfg.train.monitor.grad_monitor.enabled is True
    assert cfg.train.monitor.grad_monitor.every == 500
    assert cfg.train.monitor.grad_monitor.warn_norm == pytest.approx(1e-9)
    assert cfg.train.monitor.encoder_grad_hooks is True
    assert cfg.train.loss.variance_penalty_weight == pytest.approx(0.02)
    assert cfg.train.degeneracy.reset_scale == pytest.approx(0.1)
    assert cfg.train.degeneracy.pred_std_floor == pytest.approx(1e-5)
    cfg = load_config(["train.loss.variance_penalty_weight=0.5"], environ=environ)
    assert cfg.train.loss.variance_penalty_weight == pytest.approx(0.5)
    defaults = load_config([], environ={})
    assert defaults.train.monitor.grad_monitor.enabled is False
    assert defaults.train.loss.variance_penalty_weight == pytest.approx(0.01)


@pytest.mark.parametrize("name,value", [("GRAD_MONITOR_EVERY", "often"), ("ENABLE_GRAD_MONITOR", "maybe"),
                                        ("PRED_STD_FLOOR", "tiny")])
def test_bad_env_value_is_refused_naming_it(name, value):
    with pytest.raises(InputError, match=name):
        load_config([], environ={name: value})


def test_bad_override_is_one_line_error_with_exit_2(capsys):
    assert main(["model", "summary", "model.no_such_group.x=1", "model=does_not_exist"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("atft: error:") and "\n" not in err
    assert main(["model", "summary", "not-an-override"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_model_summary_lists_every_module(capsys):
    assert main(["model", "summary", "--features", "12"]) == 0
    out = capsys.readouterr().out
    for name in MODULE_NAMES:
        assert name in out
    assert "total" in out
