"""Row 5: non-finite numbers. Features and targets: counted per column in data.json and the notes,
treated as missing / masked. Loss or gradient: the step is skipped with a ``[NONFINITE]`` line; K in a
row stop the run with one line, and no NaN weight is ever written."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest
import torch
from fault_helpers import one_error_line, overrides

from atft.cli import main
from atft.training.module import ATFTLightningModule
from atft.training.nonfinite import finite_step


def _inject(path, column: str, rows: list[int], value: float) -> None:
    df = pl.read_parquet(path).with_row_index("_i")
    df = df.with_columns(pl.when(pl.col("_i").is_in(rows)).then(pl.lit(value, pl.Float32)).otherwise(pl.col(column))
                         .alias(column))
    df.drop("_i").write_parquet(path)


def test_nonfinite_features_and_targets_counted_and_treated_as_missing(dataset, tmp_path, cli):
    _inject(dataset, "sig", [100, 200, 300], math.inf)
    _inject(dataset, "noise_a", [150], -math.inf)
    _inject(dataset, "noise_b", [160, 161], math.nan)
    _inject(dataset, "target_1d", [120, 130], math.inf)
    run = tmp_path / "run"
    assert cli("train", *overrides(dataset, run))[0] == 0
    record = json.loads((run / "data.json").read_text())
    assert record["nonfinite"] == {"features": {"sig": 3, "noise_a": 1, "noise_b": 2}, "targets": {"target_1d": 2}}
    notes = " | ".join(record["notes"])
    assert "non-finite feature values (NaN/inf) treated as missing: sig 3, noise_a 1, noise_b 2" in notes
    assert "non-finite target values (NaN/inf) masked: target_1d 2" in notes
    assert "target_1d 2" in (tmp_path / "_logs" / "run.log").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert math.isfinite(metrics["test"]["1d"]["rank_ic"])


def _nan_loss_at(monkeypatch, steps) -> None:
    """Test hook: the training loss of the given optimiser steps (all when None) becomes NaN."""
    original = ATFTLightningModule.loss_terms

    def loss_terms(self, out, batch):
        terms = original(self, out, batch)
        if self.training and (steps is None or self.global_step in steps):
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(ATFTLightningModule, "loss_terms", loss_terms)


def _all_finite(ckpt) -> bool:
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_one_nonfinite_loss_is_skipped_and_logged_with_its_dates(dataset, tmp_path, cli, monkeypatch):
    _nan_loss_at(monkeypatch, {1})
    run = tmp_path / "run"
    assert cli("train", *overrides(dataset, run))[0] == 0
    lines = [line for line in (tmp_path / "_logs" / "run.log").read_text().splitlines() if "[NONFINITE]" in line]
    assert len(lines) == 1 and "step 1 " in lines[0] and "non-finite loss" in lines[0]
    assert "batch dates 2024-" in lines[0] and "step skipped" in lines[0]
    assert _all_finite(run / "checkpoints" / "last.ckpt")
    metrics = json.loads((run / "metrics.json").read_text())
    assert math.isfinite(metrics["test"]["1d"]["rank_ic"])


def test_consecutive_nonfinite_steps_stop_the_run_without_nan_weights(dataset, tmp_path, cli, monkeypatch):
    _nan_loss_at(monkeypatch, None)
    run = tmp_path / "run"
    code, err = cli("train", *overrides(dataset, run, **{"train.nonfinite.max_consecutive": 4}))
    line = one_error_line(err)
    assert code == 1 and "4 consecutive steps had a non-finite loss or gradient" in line
    assert "train.nonfinite.max_consecutive=4" in line and "batch dates 2024-" in line
    assert not (run / "metrics.json").exists()
    assert all(_all_finite(p) for p in run.rglob("*.ckpt"))
    log = (tmp_path / "_logs" / "run.log").read_text()
    assert log.count("[NONFINITE]") == 4


def test_nonfinite_gradient_is_detected():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.tensor([0.0, float("inf"), 1.0])
    assert not finite_step(torch.tensor(0.5), [p])
    assert finite_step(torch.tensor(0.5), [p], check_grads=False)
    p.grad = torch.zeros(3)
    assert finite_step(torch.tensor(0.5), [p]) and not finite_step(torch.tensor(float("nan")), [p])


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_nonfinite_loss_is_detected(value):
    assert not finite_step(torch.tensor(value), [])


def test_nonfinite_raw_prices_are_counted_in_the_quality_summary(tmp_path, capsys):
    raw = tmp_path / "raw.csv"
    rows = [f"AAA,2021-01-{d:02d},10,11,9,{10 + d / 10},1000" for d in range(4, 30) if d % 7 not in (2, 3)]
    rows[3] = rows[3].replace(",1000", ",inf")
    rows[5] = rows[5].replace(",11,9,", ",11,nan,")
    raw.write_text("Code,Date,Open,High,Low,Close,Volume\n" + "\n".join(rows) + "\n")
    assert main(["dataset", "build", "--source", str(raw), "--out", str(tmp_path / "ds.parquet")]) == 0
    out = capsys.readouterr().out
    assert "1 rows: non-finite open/high/low/close (NaN/inf)" in out  # the NaN low: row dropped
    assert "1 rows without volume" in out  # the inf volume: missing, kept null
    data = pl.read_parquet(tmp_path / "ds.parquet")
    assert data.height == len(rows) - 1
    numeric = [c for c, t in data.schema.items() if t.is_float()]
    assert not data.select(pl.any_horizontal(pl.col(c).is_infinite() for c in numeric).any()).item()
