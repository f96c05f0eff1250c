"""Row 2: damaged or mismatched files get one ``atft: error:`` line, exit 2, and nothing is written."""

from __future__ import annotations

import shutil

import polars as pl
import pytest
from fault_helpers import one_error_line, overrides, truncate


@pytest.mark.parametrize("keep", [0.5, 0.02])
def test_truncated_checkpoint(trained, tmp_path, cli, keep):
    ckpt = truncate(trained["best"], tmp_path / "t.ckpt", keep)
    out = tmp_path / "preds.parquet"
    code, err = cli("predict", "--checkpoint", ckpt, "--data-path", trained["data"], "--out", out)
    assert code == 2 and "truncated or corrupt" in one_error_line(err) and str(ckpt) in err
    assert not out.exists()


def test_truncated_checkpoint_on_resume(trained, tmp_path, cli):
    ckpt = truncate(trained["last"], tmp_path / "t.ckpt")
    run = tmp_path / "resumed"
    code, err = cli("train", "--resume-from", ckpt, *overrides(trained["data"], run))
    assert code == 2 and "truncated or corrupt" in one_error_line(err) and not run.exists()


def test_truncated_dataset_parquet(dataset, tmp_path, cli):
    bad = truncate(dataset, tmp_path / "bad.parquet")
    run = tmp_path / "run"
    code, err = cli("train", *overrides(bad, run))
    assert code == 2 and "not a readable parquet" in one_error_line(err) and not run.exists()


def test_damaged_meta_sidecar(dataset, tmp_path, cli):
    sidecar = dataset.parent / f"{dataset.name}.meta.json"
    sidecar.write_text('{"features": ["sig", ')  # torn write
    run = tmp_path / "run"
    code, err = cli("train", *overrides(dataset, run))
    assert code == 2 and str(sidecar) in one_error_line(err) and "damaged" in err and not run.exists()


def _predict_with_record(trained, tmp_path, cli, edit) -> tuple[int, str, bool]:
    """``atft predict`` with a copy of the trained run whose ``data.json`` text went through ``edit``;
    ``(exit code, stderr, whether the output file exists)``."""
    run = tmp_path / "copy"
    shutil.copytree(trained["run"], run)
    (run / "data.json").write_text(edit((run / "data.json").read_text()))
    out = tmp_path / "preds.parquet"
    code, err = cli("predict", "--checkpoint", run / "checkpoints" / "best.ckpt", "--data-path", trained["data"],
                    "--out", out)
    return code, err, out.exists()


def test_damaged_run_record(trained, tmp_path, cli):
    code, err, written = _predict_with_record(trained, tmp_path, cli, lambda text: text[:100])
    assert code == 2 and "data.json" in one_error_line(err) and "damaged" in err and not written


def test_checkpoint_of_other_horizons_on_resume(trained, tmp_path, cli):
    run = tmp_path / "h1"
    code, err = cli("train", "--resume-from", trained["last"], *overrides(trained["data"], run),
                    "data.horizons=[1]")
    assert code == 2 and "horizons [1, 5] vs [1]" in one_error_line(err) and not run.exists()


def test_checkpoint_of_other_features_on_resume(trained, tmp_path, cli):
    run = tmp_path / "fewer"
    code, err = cli("train", "--resume-from", trained["last"], *overrides(trained["data"], run),
                    "data.features.exclude=[noise_b]")
    line = one_error_line(err)
    assert code == 2 and "4 features vs 3" in line and "missing 1 (noise_b)" in line and not run.exists()


def test_checkpoint_of_other_features_on_predict(trained, tmp_path, cli):
    data = tmp_path / "fewer.parquet"
    pl.read_parquet(trained["data"]).drop("noise_b").write_parquet(data)
    out = tmp_path / "preds.parquet"
    code, err = cli("predict", "--checkpoint", trained["best"], "--data-path", data, "--out", out)
    assert code == 2 and "noise_b" in one_error_line(err) and not out.exists()


def test_checkpoint_that_does_not_match_its_run_record(trained, tmp_path, cli):
    def one_horizon(text):
        return text.replace('"horizons": [\n    1,\n    5\n  ]', '"horizons": [1]')

    code, err, written = _predict_with_record(trained, tmp_path, cli, one_horizon)
    assert code == 2 and "horizons [1, 5] vs [1]" in one_error_line(err) and not written


def test_predictions_without_needed_columns(trained, tmp_path, cli):
    preds = tmp_path / "preds.parquet"
    pl.read_parquet(trained["run"] / "predictions_test.parquet").drop("target_1d").write_parquet(preds)
    code, err = cli("backtest", "--predictions", preds)
    assert code == 2 and "target_1d" in one_error_line(err) and not (tmp_path / "backtest").exists()
    no_pred = tmp_path / "no_pred.parquet"
    pl.read_parquet(trained["run"] / "predictions_test.parquet").drop("pred_1d", "pred_5d").write_parquet(no_pred)
    code, err = cli("backtest", "--predictions", no_pred)
    assert code == 2 and "pred_{h}d" in one_error_line(err)


def test_truncated_predictions_file(trained, tmp_path, cli):
    preds = truncate(trained["run"] / "predictions_test.parquet", tmp_path / "preds.parquet")
    code, err = cli("backtest", "--predictions", preds)
    assert code == 2 and "not a readable parquet" in one_error_line(err) and not (tmp_path / "backtest").exists()
