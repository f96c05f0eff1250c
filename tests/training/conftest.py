"""Fixtures for training tests: a tiny contract-following dataset and a fast config."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_panel import fast_overrides, write_dataset

from atft.config import load_config


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_dataset(tmp_path / "data" / "ml.parquet")


@pytest.fixture
def make_cfg(tmp_path, dataset):
    """``make_cfg(name, **overrides)`` -> a resolved config writing into ``tmp_path/<name>``."""

    def make(name: str = "run", environ: dict | None = None, data_path: Path | None = None, **extra):
        return load_config(fast_overrides(data_path or dataset, tmp_path / name, **extra), environ=environ or {})

    return make
