"""compare -> evaluate -> predict -> report on a tiny synthetic panel (one training epoch per ATFT variant)."""

import base64
import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import numpy as np
import polars as pl
import pytest

from atft.config import load_config
from atft.data.build import build_dataset
from atft.errors import InputError
from atft.evaluation.compare import MODELS, compare
from atft.evaluation.evaluate import evaluate
from atft.evaluation.predict import predict
from atft.evaluation.report import build_report

TINY = ["model.hidden_size=16", "data.lookback=5", "model.temporal.attention_heads=2", "model.gat.heads=2",
        "model.gat.layers=1", "model.graph.window=20", "model.graph.k=5", "train.batch.train_batch_size=512",
        "train.batch.val_batch_size=4096", "train.trainer.enable_progress_bar=false",
        "data.features.include=[returns_1d,returns_2d,returns_5d,returns_20d]"]
PNG = b"\x89PNG\r\n\x1a\n"


def tiny_synthetic(folder, stocks=30, days=150, seed=1):
    path = folder / "syn.parquet"
    build_dataset(load_config(["data.build.source=synthetic", f"data.build.out={path}", f"data.build.stocks={stocks}",
                               f"data.build.days={days}", f"data.build.seed={seed}", "data.build.horizons=[1,5]",
                               "data.build.synthetic.preset=legacy"]))
    return path


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    data = tiny_synthetic(folder)
    board = compare(data, seeds=1, out=folder / "cmp", max_epochs=1, overrides=TINY)
    return folder, data, board


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images[attrs.get("id")] = attrs.get("src", "")


@pytest.mark.slow
def test_compare_produces_every_row_and_the_oracle(compared):
    folder, _, board = compared
    assert set(board["models"]) == {*MODELS, "oracle"}
    for name in MODELS:
        m = board["models"][name]["1d"]
        assert m["days"]["mean"] == board["models"]["oracle"]["1d"]["days"]["mean"] > 5  # same days for all
        assert np.isfinite(m["rank_ic_se"]["mean"]) and "sharpe_net_beta_neutral" in m
    assert board["oracle_share"]["oracle"]["1d"] == pytest.approx(1.0)
    assert board["models"]["oracle"]["1d"]["rank_ic"]["mean"] > 0.05  # the planted alpha is there
    md = (folder / "cmp" / "leaderboard.md").read_text()
    assert all(f"| {name} |" in md for name in MODELS) and "oracle share" in md
    assert json.loads((folder / "cmp" / "leaderboard.json").read_text())["cost_bps"] == 10.0


@pytest.mark.slow
def test_evaluate_and_predict_from_the_checkpoint(compared, tmp_path):
    folder, data, _ = compared
    run = folder / "cmp" / "atft" / "seed0"
    result = evaluate(run_dir=run, split="val", cost_bps=5.0)
    assert result["split"] == "val" and result["cost_bps"] == 5.0
    assert set(result["models"]) >= {"atft", "momentum_20d", "reversal_5d"}
    assert (run / "evaluation_val.json").is_file() and (run / "daily_val.parquet").is_file()
    # the saved test predictions and the checkpoint inference agree
    test = evaluate(run_dir=run, split="test")
    saved = json.loads((run / "metrics.json").read_text())["test"]["1d"]["rank_ic"]
    assert test["metrics"]["1d"]["rank_ic"] == pytest.approx(saved, abs=0.02)
    out = predict(run / "checkpoints" / "best.ckpt", data, tmp_path / "p.parquet", date=None)
    preds = pl.read_parquet(out)
    assert {"Code", "Date", "pred_1d", "rank_1d", "pred_5d", "rank_5d"} <= set(preds.columns)
    day = preds.filter(pl.col("Date") == preds["Date"].max())
    assert sorted(day["rank_1d"].to_list()) == list(np.arange(1.0, day.height + 1))
    pl.read_parquet(data).drop("returns_20d").write_parquet(tmp_path / "fewer.parquet")
    with pytest.raises(InputError, match="missing 1 \\(returns_20d\\)"):
        predict(run / "checkpoints" / "best.ckpt", tmp_path / "fewer.parquet", tmp_path / "q.parquet")


@pytest.mark.slow
def test_report_holds_every_plot(compared):
    folder, _, _ = compared
    report = build_report(folder / "cmp")
    parser = _Images()
    parser.feed(report.read_text())
    expected = {"cumulative_long_short", "daily_rank_ic", "ic_by_horizon", "quintile_returns", "training_curves",
                "validation_rank_ic", "gradient_norms", "degeneracy_resets", "feature_importance", "decomposition"}
    assert {k.removeprefix("plot-") for k in parser.images} == expected
    for src in parser.images.values():
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG
    text = report.read_text()
    assert "Newey–West HAC" in text and "Sharpe(lag1)" in text and "lag-1 forward return" in text


def find_browser() -> str | None:
    """A headless-capable Chromium on PATH; without one the browser test skips unless ATFT_REQUIRE_BROWSER=1
    (set by .ci/run, which installs Chromium) makes that a failure."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        how = "install Chromium (apt-get install chromium) to run it"
        if os.environ.get("ATFT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"ATFT_REQUIRE_BROWSER=1 but no chromium/chromium-browser/google-chrome on PATH: {how}")
        pytest.skip(f"no Chromium on PATH: {how}; ATFT_REQUIRE_BROWSER=1 makes its absence a failure")
    return browser


@pytest.mark.slow
def test_report_opens_in_chromium(compared):
    browser = find_browser()
    folder, _, _ = compared
    report = build_report(folder / "cmp", out=folder / "chromium" / "report.html")
    shot = folder / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tempfile.mkdtemp()}", f"--screenshot={shot}", "--window-size=1200,3000",
                    report.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == PNG and shot.stat().st_size > 50_000  # a rendered page, not a blank one


def test_predict_writes_ordered_quantiles_for_a_quantile_head(tmp_path):
    from atft.training.train import train

    data = tiny_synthetic(tmp_path)
    cfg = load_config([f"data.path={data}", f"run_dir={tmp_path / 'q'}", "run_name=q_head",
                       "train.trainer.max_epochs=1", "model.quantiles=[0.1,0.5,0.9]", *TINY])
    train(cfg)
    out = predict(tmp_path / "q" / "checkpoints" / "best.ckpt", data, tmp_path / "q.parquet")
    preds = pl.read_parquet(out)
    for h in (1, 5):
        cols = [f"pred_{h}d_q0.1", f"pred_{h}d_q0.5", f"pred_{h}d_q0.9"]
        assert set(cols) <= set(preds.columns)
        lo, mid, hi = (preds[c].to_numpy() for c in cols)
        assert np.all(lo <= mid) and np.all(mid <= hi) and np.any(lo < hi)
        # the point forecast of a quantile head is its median level
        np.testing.assert_allclose(preds[f"pred_{h}d"].to_numpy(), mid, rtol=1e-6)


def test_evaluate_keeps_the_runs_split_dates_on_a_different_dataset(compared, tmp_path):
    """A shorter rebuild of the dataset must not move validation days onto the run's training dates."""
    folder, data, _ = compared
    run = folder / "cmp" / "atft" / "seed0"
    recorded = json.loads((run / "data.json").read_text())["splits"]
    frame = pl.read_parquet(data)
    last = sorted(frame["Date"].unique())[-10]
    shorter = tmp_path / "shorter.parquet"
    frame.filter(pl.col("Date") <= last).write_parquet(shorter)
    result = evaluate(run_dir=run, data_path=shorter, split="val")
    assert result["first"] == recorded["val"]["first"] and result["last"] == recorded["val"]["last"]
    assert result["checkpoint"].endswith("best.ckpt")
