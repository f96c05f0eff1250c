"""Readers of a training run folder's records: metrics.jsonl, grad_norms.jsonl and the run log."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

GRAD_LINE = re.compile(r"\[GRAD-MONITOR\] step=(\d+) (\S+): norm=([0-9.eE+-]+)")


def read_jsonl(path: Path) -> list[dict]:
    if path is None or not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def run_log_path(run: Path | None) -> Path | None:
    """``<train.log_dir>/<run_name>.log`` from the run's config.yaml (None if it cannot be found)."""
    if run is None or not (run / "config.yaml").is_file():
        return None
    cfg = OmegaConf.load(run / "config.yaml")
    name = cfg.get("run_name") or run.name
    path = Path(cfg.train.get("log_dir") or "_logs/training") / f"{name}.log"
    return path if path.is_file() else None


def grad_norm_history(run: Path | None, log_path: Path | None) -> tuple[dict, dict]:
    """Per-module gradient norms ``(steps, norms)``, each ``{module: array}``.

    From ``grad_norms.jsonl`` (``{"step", "norms": {module: norm}, "encoder": {...}}``), else from the
    ``[GRAD-MONITOR] step=S module: norm=X`` lines of the run log.
    """
    steps: dict[str, list[float]] = {}
    norms: dict[str, list[float]] = {}
    for record in read_jsonl(run / "grad_norms.jsonl") if run else []:
        for group in ("norms", "encoder"):
            for name, value in (record.get(group) or {}).items():
                if value is not None:
                    steps.setdefault(name, []).append(record.get("step", len(steps.get(name, []))))
                    norms.setdefault(name, []).append(float(value))
    if not norms and log_path is not None:
        for match in GRAD_LINE.finditer(log_path.read_text(errors="replace")):
            steps.setdefault(match.group(2), []).append(int(match.group(1)))
            norms.setdefault(match.group(2), []).append(float(match.group(3)))
    return ({k: np.asarray(v) for k, v in steps.items()},
            {k: np.maximum(np.asarray(v), 1e-30) for k, v in norms.items()})  # log axis: no exact zeros


def degeneracy_events(log_path: Path | None) -> list[str]:
    """The ``[DEGENERACY-GUARD]`` lines of the run log."""
    if log_path is None:
        return []
    return [line for line in log_path.read_text(errors="replace").splitlines() if "[DEGENERACY-GUARD]" in line]
