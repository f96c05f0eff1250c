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


def _compose(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        try:
            return compose("config", overrides=overrides)
        except HydraException as exc:
            msg = str(exc).strip().splitlines()[0]
            raise InputError(f"bad config override: {msg}") from None


def read_config_file(path: str | Path, base: DictConfig) -> DictConfig:
    """``base`` with the YAML file ``path`` merged over it; a key that ``base`` lacks is refused."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {path} does not exist")
    try:
        loaded = OmegaConf.load(path)
    except Exception as exc:  # noqa: BLE001 - any YAML error is a bad file for the user
        raise InputError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(loaded, DictConfig):
        raise InputError(f"config file {path} is not a mapping of config keys")
    OmegaConf.set_struct(base, True)
    try:
        return OmegaConf.merge(base, loaded)
    except Exception as exc:  # noqa: BLE001 - unknown key or wrong type, named by OmegaConf
        raise InputError(f"config file {path}: {str(exc).splitlines()[0]}") from None


def load_config(overrides: list[str] | None = None, environ: dict[str, str] | None = None,
                config_file: str | Path | None = None) -> DictConfig:
    """Compose the root config with env switches, then ``overrides`` (``key=value`` strings).

    With ``config_file`` (a full config such as a run's ``config.yaml`` or ``atft tune``'s ``best.yaml``)
    the precedence is: YAML defaults < the file < environment switches < explicit overrides.
    """
    overrides = list(overrides or [])
    for item in overrides:
        if "=" not in item:
            raise InputError(f"override {item!r} is not of the form key=value")
    switches = env_overrides(environ) + overrides
    cfg = _compose(switches)
    if config_file is not None:
        explicit = cfg
        cfg = read_config_file(config_file, _compose([]))
        for item in switches:  # re-apply what the environment and command line set, as Hydra parsed it
            key = item.split("=", 1)[0].lstrip("+~")
            OmegaConf.update(cfg, key, OmegaConf.select(explicit, key), force_add=True)
    OmegaConf.set_struct(cfg, False)
    return cfg


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved config atomically (temp file then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(redact(OmegaConf.to_yaml(cfg, resolve=True)))
    tmp.replace(path)
