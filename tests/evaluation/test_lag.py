"""Tradeable lag: every book, Sharpe and turnover trades a signal one close after the close that produced it,
unless lag 0 is asked for (and then it says "not tradeable")."""

from types import SimpleNamespace

import numpy as np
import pytest

from atft.cli import build_parser
from atft.config import load_config
from atft.evaluation.compare import eval_lag, score
from atft.evaluation.leaderboard import format_leaderboard
from atft.evaluation.metrics import evaluate_predictions
from atft.training.run_logging import epoch_line

D, N = 250, 40


def same_day_panel(seed: int = 0):
    """iid next-day returns ``[D, N]`` and a 'prediction' equal to them: perfect at lag 0, useless at lag 1."""
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0, 0.02, size=(D, N))
    return returns[..., None], returns[..., None].copy()  # target [D, N, 1], pred [D, N, 1]


def test_same_day_return_is_only_profitable_at_the_untradeable_lag():
    target, pred = same_day_panel()
    default = evaluate_predictions(pred, target, None, [1])["1d"]
    lag0 = evaluate_predictions(pred, target, None, [1], lag=0)["1d"]
    lag1 = evaluate_predictions(pred, target, None, [1], lag=1)["1d"]
    assert lag0["sharpe"] > 50  # trading at the close that produced the signal
    assert abs(lag1["sharpe"]) < 3 * lag1["sharpe_se"]  # ~0 within its standard error
    assert default["sharpe"] == lag1["sharpe"] and default["lag"] == 1 and lag0["lag"] == 0
    assert default["rank_ic"] == lag0["rank_ic"] == pytest.approx(1.0)  # IC stays against target_1d
    assert abs(default["rank_ic_lag1"]) < 0.05  # ... and against the lag-1 forward return it is ~0
    assert default["ls_days"] == D - 1  # the first day has no lagged signal


def _fake_panel(target: np.ndarray):
    d_count, n = target.shape[:2]
    return SimpleNamespace(M=np.ones((d_count, n), bool), Y=target.astype(np.float32),
                           Y_mask=np.isfinite(target), horizons=[1],
                           dates=np.datetime64("2020-01-01") + np.arange(d_count))


def test_compare_scoring_trades_at_lag_1_and_ranks_the_global_forward_return():
    target, pred = same_day_panel(1)
    panel = _fake_panel(target)
    test_days = np.arange(100, 200)
    results, daily, _ = score({"planted": [pred]}, panel, test_days, cost_bps=0.0)
    tradeable = results["planted"][0]["1d"]
    not_tradeable = score({"planted": [pred]}, panel, test_days, cost_bps=0.0, lag=0)[0]["planted"][0]["1d"]
    assert not_tradeable["sharpe"] > 50 and abs(tradeable["sharpe"]) < 3 * tradeable["sharpe_se"]
    assert tradeable["lag"] == 1
    # a prediction of the next day's return: RankIC vs the lag-1 forward return is 1 on EVERY test day,
    # the last one included (its t+1 lies beyond the test days but on the panel's day axis)
    ahead = np.full_like(pred, np.nan)
    ahead[:-1] = target[1:]
    row = score({"ahead": [ahead]}, panel, test_days, cost_bps=0.0)[0]["ahead"][0]["1d"]
    assert row["rank_ic_lag1"] == pytest.approx(1.0)
    daily_ahead = score({"ahead": [ahead]}, panel, test_days, cost_bps=0.0)[1]
    assert np.isfinite(daily_ahead["rank_ic_lag1"].to_numpy()).sum() == len(test_days)
    assert np.isfinite(daily["ls_gross"].to_numpy()).sum() == len(test_days) - 1


def test_lag_default_comes_from_the_config_and_the_flag():
    cfg = load_config([])
    assert cfg.train.eval.lag == 1 and eval_lag(cfg) == 1 and eval_lag(cfg, 0) == 0
    assert eval_lag(load_config(["train.eval.lag=0"])) == 0
    for argv in (["evaluate", "--run", "r"], ["compare", "--data-path", "d", "--out", "o"]):
        assert build_parser().parse_args(argv).lag is None  # -> train.eval.lag
        assert build_parser().parse_args([*argv, "--lag", "0"]).lag == 0


def test_lag_is_named_in_the_log_line_and_the_leaderboard():
    line = epoch_line(1, 2, 0.1, 0.1, {"sharpe": 0.5, "ic": 0.01, "rank_ic": 0.02, "lag": 1}, 0, 1.0)
    assert "Sharpe(lag1) 0.50" in line
    assert "Sharpe(lag0 not tradeable)" in epoch_line(1, 2, 0.1, 0.1, {"lag": 0}, 0, 1.0)
    stat = {"mean": 0.1, "std": 0.0, "n": 1}
    metrics = {k: stat for k in ("rank_ic", "rank_ic_se", "tstat", "ic", "icir", "sharpe", "sharpe_net",
                                 "sharpe_se", "ann_return_net", "max_drawdown_net", "turnover")}
    metrics["days"] = {"mean": 250.0, "std": 0.0, "n": 1}
    board = {"models": {"m": {"5d": metrics}}, "horizons": [5], "lag": 1}
    md = format_leaderboard(board)
    assert "Sharpe(lag1)" in md and "Newey–West HAC, Bartlett kernel, 10 lags over 250 days" in md
    md0 = format_leaderboard({**board, "lag": 0})
    assert "Sharpe(lag0 not tradeable)" in md0 and "(not tradeable)" in md0


def test_evaluate_table_names_the_lag_and_the_se():
    from atft.evaluation.evaluate import format_metrics_table

    result = {"split": "test", "days": 250, "first": "a", "last": "b", "cost_bps": 10.0, "lag": 0,
              "models": {"atft": {"20d": {"sharpe": {"mean": 1.0}}}}, "metrics": {"20d": {}}}
    table = format_metrics_table(result)
    assert "not tradeable" in table and "Newey–West HAC" in table and "20d 40" in table
    assert "Sharpe(lag1)" in format_metrics_table({**result, "lag": 1})
