"""Row 1: a checkpoint is unpickled weights-only; one that would run code is refused before it can."""

from __future__ import annotations

import os

import pytest
import torch
from fault_helpers import one_error_line, overrides

from atft.errors import InputError
from atft.training.train import AtomicCheckpointIO


class _Payload:
    """Unpickling this runs ``touch <marker>`` (what a malicious shared checkpoint would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted(trained, tmp_path):
    """A copy of a real checkpoint with the payload added under an innocent key."""
    marker = tmp_path / "MARKER"
    state = torch.load(trained["best"], weights_only=True)
    state["callbacks"]["Extra"] = _Payload(marker)
    path = tmp_path / "shared.ckpt"
    torch.save(state, path)
    return path, marker


def test_predict_refuses_a_checkpoint_that_would_run_code(trained, tmp_path, cli):
    path, marker = _crafted(trained, tmp_path)
    out = tmp_path / "preds.parquet"
    code, err = cli("predict", "--checkpoint", path, "--data-path", trained["data"], "--out", out)
    line = one_error_line(err)
    assert code == 2 and str(path) in line and "posix.system" in line
    assert not marker.exists() and not out.exists()


def test_evaluate_refuses_a_checkpoint_that_would_run_code(trained, tmp_path, cli):
    path, marker = _crafted(trained, tmp_path)
    code, err = cli("evaluate", "--run", trained["run"], "--checkpoint", path)
    assert code == 2 and "posix.system" in one_error_line(err) and not marker.exists()


def test_resume_refuses_a_checkpoint_that_would_run_code(trained, tmp_path, cli):
    path, marker = _crafted(trained, tmp_path)
    run = tmp_path / "resumed"
    code, err = cli("train", "--resume-from", path, *overrides(trained["data"], run))
    assert code == 2 and "posix.system" in one_error_line(err)
    assert not marker.exists() and not run.exists()


def test_own_checkpoints_load_weights_only(trained):
    state = torch.load(trained["last"], weights_only=True)  # what every loader of atft now does
    assert {"state_dict", "hyper_parameters", "optimizer_states"} <= set(state)
    assert isinstance(state["hyper_parameters"]["cfg"], dict)


def test_lightning_resume_path_is_weights_only(trained, tmp_path):
    """``Trainer.fit(ckpt_path=...)`` reads through ``AtomicCheckpointIO.load_checkpoint``."""
    path, marker = _crafted(trained, tmp_path)
    with pytest.raises(InputError, match="posix.system"):
        AtomicCheckpointIO().load_checkpoint(path, map_location="cpu", weights_only=False)
    assert not marker.exists()
    assert "state_dict" in AtomicCheckpointIO().load_checkpoint(trained["last"])
