"""Fixtures for the fault matrix (docs/reliability.md): the tiny training dataset, a trained run, and
``cli`` which runs ``atft`` in-process and returns ``(exit code, stderr)``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_helpers import overrides, write_dataset  # noqa: E402

from atft.cli import main  # noqa: E402


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_dataset(tmp_path / "data" / "ml.parquet")


@pytest.fixture
def cli(capsys):
    """``cli(*argv)`` -> ``(exit code, stderr)`` of ``atft`` run in this process."""

    def run(*argv) -> tuple[int, str]:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        return code, capsys.readouterr().err

    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One finished 1-epoch run shared by a test module: ``{"data", "run", "best", "last"}``."""
    root = tmp_path_factory.mktemp("trained")
    data = write_dataset(root / "data" / "ml.parquet")
    run = root / "run"
    assert main(["train", *overrides(data, run)]) == 0
    return {"data": data, "run": run, "best": run / "checkpoints" / "best.ckpt",
            "last": run / "checkpoints" / "last.ckpt"}
