"""Decomposition on a planted market: each model's RankIC against each oracle component, in ``compare``'s
leaderboard (md and json) and in the report; the volume-conditional component is one trees find and a
linear model does not."""

import json

import numpy as np
import pytest

from atft.config import load_config
from atft.data.build import build_dataset
from atft.evaluation.compare import compare
from atft.evaluation.decomposition import component_rank_ics, decompose
from atft.evaluation.report import build_report

PARTS = ["total", "reversal", "conditional", "sector", "cluster", "regime"]


def test_decompose_scores_each_model_against_each_part():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 30, 20, 1))  # two independent "components"  # [D, N, H]
    support = np.ones((30, 20), bool)
    out = decompose({"copy_a": [a], "noisy_a": [a + rng.normal(size=a.shape), a + rng.normal(size=a.shape)]},
                    {"a": a, "b": b}, support, np.arange(30), [1])
    assert out["components"] == ["a", "b"]
    assert out["models"]["copy_a"]["1d"]["a"]["rank_ic"] == pytest.approx(1.0)
    assert abs(out["models"]["copy_a"]["1d"]["b"]["rank_ic"]) < 4 * out["models"]["copy_a"]["1d"]["b"]["se"]
    noisy = out["models"]["noisy_a"]["1d"]["a"]
    assert 0.5 < noisy["rank_ic"] < 0.9 and noisy["days"] == 30  # two seeds, one seed-averaged daily series


@pytest.fixture(scope="module")
def planted_compare(tmp_path_factory):
    """60 stocks x 300 days of the rich market (conditional loading 0.5), ridge / lightgbm / reversal."""
    folder = tmp_path_factory.mktemp("planted")
    path = folder / "rich.parquet"
    build_dataset(load_config(["data.build.source=synthetic", f"data.build.out={path}", "data.build.stocks=60",
                               "data.build.days=300", "data.build.seed=2", "data.build.horizons=[1]",
                               "data.build.synthetic.cond=0.5"]))
    board = compare(path, out=folder / "cmp", models="ridge,lightgbm,reversal_5d")
    return folder / "cmp", board


def test_compare_writes_the_decomposition(planted_compare):
    out, board = planted_compare
    dec = json.loads((out / "leaderboard.json").read_text())["decomposition"]
    assert dec["components"] == PARTS and set(dec["models"]) == {"ridge", "lightgbm", "reversal_5d", "oracle"}
    assert dec["models"]["oracle"]["1d"]["total"]["rank_ic"] == pytest.approx(1.0)
    days = board["models"]["oracle"]["1d"]["days"]["mean"]
    assert dec["models"]["ridge"]["1d"]["reversal"]["days"] >= days  # + the last day, which has no target yet
    ridge = dec["models"]["ridge"]["1d"]
    assert ridge["reversal"]["rank_ic"] > 4 * ridge["reversal"]["se"]  # the linear part is found
    md = (out / "leaderboard.md").read_text()
    assert "## Decomposition: RankIC vs each planted component" in md
    assert "| model | total | reversal | conditional | sector | cluster | regime |" in md
    assert all(f"| {m} | " in md.split("## Decomposition")[1] for m in ("ridge", "lightgbm", "reversal_5d", "oracle"))
    html = build_report(out).read_text()
    assert "Decomposition: RankIC vs each planted component" in html and 'id="plot-decomposition"' in html


def test_trees_find_the_volume_conditional_component_a_linear_model_misses(planted_compare):
    _, board = planted_compare
    ridge, lgbm = (board["decomposition"]["models"][m]["1d"]["conditional"] for m in ("ridge", "lightgbm"))
    assert abs(ridge["rank_ic"]) < 0.1
    assert lgbm["rank_ic"] > ridge["rank_ic"] + 0.15 and lgbm["rank_ic"] > 5 * lgbm["se"]


def test_component_rank_ics_against_realised_returns(planted_compare):
    out, _ = planted_compare
    table = component_rank_ics(out.parent / "rich.parquet")["1d"]
    assert list(table) == PARTS
    assert table["total"]["rank_ic"] > 0.15 and table["conditional"]["rank_ic"] > 4 * table["conditional"]["se"]
    # the regime component is constant before its change (day 150 of 300): those days have no RankIC
    assert table["regime"]["days"] == 150 and table["total"]["days"] == 299
