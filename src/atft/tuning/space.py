"""The search space of ``atft tune``: a YAML mapping of config keys to distributions, checked before use.

File format (``configs/tune/default.yaml``)::

    search: {seed: null, startup_trials: 5, ...}   # settings; a user's --space file may omit them
    space:
      train.optimizer.lr: {low: 1.0e-4, high: 3.0e-3, log: true}   # float
      model.gat.layers: {low: 1, high: 3}                           # int (both bounds integers)
      model.adaptive_norm: {choices: [layernorm, san]}              # categorical

Checks (each an ``InputError`` naming the file, key and value): the key exists in the composed config,
the range is not empty (``low <= high``, ``low > 0`` with ``log``, at least one choice), and every value
of a categorical entry builds a model and computes a training loss on one batch of the real panel — so a
loss type or normalisation name is validated by the code that uses it, not by a list kept here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import optuna
from omegaconf import DictConfig, OmegaConf

from atft.config import config_dir
from atft.errors import InputError

_MISSING = object()
_FLOAT_KEYS = {"low", "high", "log", "step", "type"}


def default_space_path() -> Path:
    return config_dir() / "tune" / "default.yaml"


@dataclass(frozen=True)
class SearchSpace:
    """The distributions (``key -> optuna distribution``), the search settings and the file they came from."""

    params: dict[str, optuna.distributions.BaseDistribution]
    settings: DictConfig
    path: Path

    def as_json(self) -> str:
        """Canonical text of the distributions: stored with the study, compared when it is resumed."""
        return json.dumps({k: optuna.distributions.distribution_to_json(d) for k, d in sorted(self.params.items())},
                          sort_keys=True)

    def suggest(self, trial: optuna.Trial) -> dict:
        """Draw every parameter for ``trial``: ``{key: value}``."""
        return {key: trial._suggest(key, dist) for key, dist in self.params.items()}


def dotlist(params: dict) -> list[str]:
    """``{key: value}`` -> ``["key=value", ...]`` for ``OmegaConf.from_dotlist`` (values as JSON scalars)."""
    return [f"{key}={json.dumps(value)}" for key, value in params.items()]


def apply_params(cfg: DictConfig, params: dict) -> DictConfig:
    """A copy of ``cfg`` with ``params`` (``{key: value}``) set."""
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotlist(params)))


def _distribution(key: str, spec, path: Path) -> optuna.distributions.BaseDistribution:
    where = f"--space {path}: {key}"
    if not isinstance(spec, dict):
        raise InputError(f"{where} is {spec!r}; expected {{low: A, high: B}} or {{choices: [...]}}")
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise InputError(f"{where} has an empty range: choices {choices!r}; expected a non-empty list")
        bad = [c for c in choices if not (c is None or isinstance(c, bool | int | float | str))]
        if bad:
            raise InputError(f"{where} choice {bad[0]!r} is not a number, string, boolean or null")
        return optuna.distributions.CategoricalDistribution(choices)
    unknown = set(spec) - _FLOAT_KEYS
    if unknown or "low" not in spec or "high" not in spec:
        raise InputError(f"{where} is {spec!r}; expected {{low: A, high: B[, log: true][, step: S]}} or "
                         f"{{choices: [...]}}")
    low, high, log, step = spec["low"], spec["high"], bool(spec.get("log", False)), spec.get("step")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
        raise InputError(f"{where}: low={low!r}, high={high!r} must be numbers")
    if low > high:
        raise InputError(f"{where} has an empty range: low={low} > high={high}")
    if log and low <= 0:
        raise InputError(f"{where}: a log range needs low > 0, got low={low}")
    kind = spec.get("type") or ("int" if isinstance(low, int) and isinstance(high, int) else "float")
    if kind == "int":
        return optuna.distributions.IntDistribution(int(low), int(high), log=log, step=int(step or 1))
    if kind != "float":
        raise InputError(f"{where}: type={kind!r}; expected int or float")
    return optuna.distributions.FloatDistribution(float(low), float(high), log=log,
                                                  step=None if step is None else float(step))


def load_space(path: str | Path | None, base_cfg: DictConfig) -> SearchSpace:
    """Read and check a space file (``None`` -> ``configs/tune/default.yaml``) against ``base_cfg``.

    The file's ``search:`` keys override the shipped defaults; its ``space:`` replaces the shipped one.
    """
    default = default_space_path()
    path = Path(path) if path is not None else default
    if not path.is_file():
        raise InputError(f"--space {path} does not exist")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as exc:  # noqa: BLE001 - any YAML error is a bad file for the user
        raise InputError(f"--space {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("space"), dict) or not raw["space"]:
        raise InputError(f"--space {path} has no `space:` mapping of config keys to distributions")
    shipped = OmegaConf.load(default).search
    unknown = set(raw.get("search") or {}) - set(shipped)
    if unknown:
        raise InputError(f"--space {path}: unknown search setting {sorted(unknown)[0]!r}; expected one of "
                         f"{sorted(shipped)}")
    settings = OmegaConf.merge(shipped, raw.get("search") or {})
    params = {}
    for key, spec in raw["space"].items():
        if OmegaConf.select(base_cfg, str(key), default=_MISSING) is _MISSING:
            raise InputError(f"--space {path}: {key!r} is not a key of the config (e.g. train.optimizer.lr)")
        params[str(key)] = _distribution(str(key), spec, path)
    return SearchSpace(params, settings, path)


def check_choices(space: SearchSpace, base_cfg: DictConfig, panel) -> None:
    """Every categorical value builds the model and computes a loss on one batch of ``panel``.

    Each choice is tried alone over ``base_cfg`` (the other keys at their base values); the error of
    the first that fails (e.g. an unknown loss type or normalisation) is raised naming the key and value.
    """
    from atft.training.datamodule import PanelDataModule
    from atft.training.module import ATFTLightningModule
    from atft.training.train import dry_run

    for key, dist in space.params.items():
        if not isinstance(dist, optuna.distributions.CategoricalDistribution):
            continue
        for value in dist.choices:
            cfg = apply_params(base_cfg, {key: value})
            try:
                module = ATFTLightningModule(cfg, len(panel.feature_names), panel.horizons)
                dm = PanelDataModule(cfg, panel, sealed=("test",))
                dm.setup("fit")
                dry_run(module, dm)
            except (ValueError, KeyError, RuntimeError) as exc:
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise InputError(f"--space {space.path}: {key}={value!r} does not train: {msg}") from None
