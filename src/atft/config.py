"""Config loading: Hydra compose over ``configs/`` plus the seed's environment switches.

Precedence (lowest to highest): YAML defaults < environment switches < explicit overrides.
The resolved config is what each run records in its ``config.yaml``.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from atft.errors import InputError
from atft.redaction import redact

# env var -> (config key, parser). These are the only environment variables that configure a run.
ENV_SWITCHES: dict[str, tuple[str, type]] = {
    "ENABLE_GRAD_MONITOR": ("train.monitor.grad_monitor.enabled", bool),
    "GRAD_MONITOR_EVERY": ("train.monitor.grad_monitor.every", int),
    "GRAD_MONITOR_WARN_NORM": ("train.monitor.grad_monitor.warn_norm", float),
    "ENABLE_ENCODER_GRAD_HOOKS": ("train.monitor.encoder_grad_hooks", bool),
    "VARIANCE_PENALTY_WEIGHT": ("train.loss.variance_penalty_weight", float),
    "DEGENERACY_RESET_SCALE": ("train.degeneracy.reset_scale", float),
    "PRED_STD_FLOOR": ("train.degeneracy.pred_std_floor", float),
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def cfg_get(cfg, key: str, default=None):
    """``cfg[key]`` for a DictConfig, dict or object; ``default`` when the node, key or value is missing/None."""
    if cfg is None:
        return default
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


def config_dir() -> Path:
    """The ``configs/`` folder: ``$ATFT_CONFIG_DIR`` or the repository's (src layout)."""
    env = os.environ.get("ATFT_CONFIG_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "configs"
    if not (path / "config.yaml").is_file():
        raise InputError(f"config folder {path} has no config.yaml (set ATFT_CONFIG_DIR)")
    return path


def _parse_env(name: str, raw: str, kind: type) -> str:
    value = raw.strip()
    try:
        if kind is bool:
            if value.lower() not in _TRUE | _FALSE:
                raise ValueError
            return "true" if value.lower() in _TRUE else "false"
        return repr(kind(value))
    except ValueError:
        raise InputError(f"environment variable {name}={raw!r} is not a valid {kind.__name__}") from None


def env_overrides(environ: dict[str, str] | None = None) -> list[str]:
    """Hydra overrides for the seed's environment switches that are set."""
    environ = os.environ if environ is None else environ
    out = []
    for name, (key, kind) in ENV_SWITCHES.items():
        if name in environ:
            out.append(f"{key}={_parse_env(name, environ[name], kind)}")
    return out


def load_config(overrides: list[str] | None = None, environ: dict[str, str] | None = None) -> DictConfig:
    """Compose the root config with env switches, then ``overrides`` (``key=value`` strings)."""
    overrides = list(overrides or [])
    for item in overrides:
        if "=" not in item:
            raise InputError(f"override {item!r} is not of the form key=value")
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        try:
            cfg = compose("config", overrides=env_overrides(environ) + overrides)
        except HydraException as exc:
            msg = str(exc).strip().splitlines()[0]
            raise InputError(f"bad config override: {msg}") from None
    OmegaConf.set_struct(cfg, False)
    return cfg


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved config atomically (temp file then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(redact(OmegaConf.to_yaml(cfg, resolve=True)))
    tmp.replace(path)
