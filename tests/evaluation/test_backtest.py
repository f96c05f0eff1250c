"""Backtest books: top-k dropout by hand, execution lag as a shift, files and plots written."""

import json

import numpy as np
import polars as pl
import pytest

from atft.errors import InputError
from atft.evaluation import metrics as mt
from atft.evaluation.backtest import (
    backtest_books,
    lag_days,
    run_backtest,
    topk_dropout_weights,
    universe_weights,
)
from atft.evaluation.predictions import arrays_to_frame, frame_to_arrays, read_predictions


def test_topk_dropout_swaps_at_most_n_drop_per_day():
    pred = np.array([[5.0, 4, 3, 2, 1], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5]])
    w = topk_dropout_weights(pred, np.ones_like(pred, dtype=bool), k=2, n_drop=1)
    np.testing.assert_allclose(w[0], [0.5, 0.5, 0, 0, 0])
    np.testing.assert_allclose(w[1], [0, 0.5, 0, 0, 0.5])  # worst held (stock 0) -> best outside (stock 4)
    np.testing.assert_allclose(w[2], [0, 0, 0, 0.5, 0.5])


def test_topk_dropout_sells_delisted_and_keeps_better_holdings():
    pred = np.array([[5.0, 4, 3, 2, 1], [5, 4, 3, 2, 1]])
    valid = np.array([[True] * 5, [False, True, True, True, True]])
    w = topk_dropout_weights(pred, valid, k=2, n_drop=1)
    np.testing.assert_allclose(w[1], [0, 0.5, 0.5, 0, 0])  # stock 0 gone; stock 1 (still best) kept


def test_lag_is_a_shift_of_the_predictions():
    rng = np.random.default_rng(0)
    pred, rets = rng.normal(size=(30, 20)), rng.normal(0, 0.01, size=(30, 20))
    lagged = backtest_books(pred, rets, horizon=1, cost_bps=10, lag=2)["long_short"]
    manual = mt.long_short_returns(lag_days(pred, 2), rets, horizon=1, cost_bps=10)
    assert np.isnan(lagged["net"][:2]).all()
    np.testing.assert_allclose(lagged["net"][2:], manual["net"][2:])
    with pytest.raises(InputError):
        lag_days(pred, -1)


def test_universe_book_is_the_equal_weight_market():
    rng = np.random.default_rng(1)
    pred, rets = rng.normal(size=(10, 8)), rng.normal(0, 0.01, size=(10, 8))
    books = backtest_books(pred, rets, horizon=1, cost_bps=0, lag=0, top_k=2, n_drop=1)
    np.testing.assert_allclose(books["universe_equal_weight"]["gross"], rets.mean(1))
    np.testing.assert_allclose(books["top2_excess"]["gross"], books["top2_drop1"]["gross"] - rets.mean(1))


@pytest.mark.parametrize("lag", [0, 1])
def test_universe_benchmark_does_not_know_who_trades_tomorrow(lag):
    """A stock with no row on t + 1 (its next-day return is NaN) is still in the equal-weight universe of
    day t, held at 1/n and earning 0 as in every book: whether it survives is not known at t."""
    rng = np.random.default_rng(4)
    pred, rets = rng.normal(size=(12, 8)), rng.normal(0.01, 0.01, size=(12, 8))
    vanished = rets.copy()
    vanished[6, 0] = np.nan  # stock 0 has no row on day 7
    zero = rets.copy()
    zero[6, 0] = 0.0
    a = backtest_books(pred, vanished, horizon=1, cost_bps=0, lag=lag, top_k=2, n_drop=1)["universe_equal_weight"]
    b = backtest_books(pred, zero, horizon=1, cost_bps=0, lag=lag, top_k=2, n_drop=1)["universe_equal_weight"]
    np.testing.assert_allclose(a["gross"], b["gross"])
    assert a["gross"][6] == pytest.approx(rets[6, 1:].sum() / 8)
    np.testing.assert_allclose(universe_weights(np.isfinite(lag_days(pred, lag))).sum(1)[lag:], 1.0)


def test_run_backtest_writes_curves_summary_and_plots(tmp_path, capsys):
    rng = np.random.default_rng(2)
    d_count, n = 60, 30
    signal = rng.normal(size=(d_count, n))
    rets = 0.01 * (0.5 * signal + rng.normal(size=(d_count, n)))
    dates = np.datetime64("2024-01-01") + np.arange(d_count)
    codes = np.array([f"C{i}" for i in range(n)])
    frame = arrays_to_frame(dates, codes, [1], signal[..., None], rets[..., None])
    frame.write_parquet(tmp_path / "preds.parquet")
    summary = run_backtest(tmp_path / "preds.parquet", cost_bps=5, lag=0, out=tmp_path / "bt")
    assert summary["books"]["long_short"]["sharpe"] > 2  # the planted signal is traded at lag 0 (not tradeable)
    assert "lag0 not tradeable" in capsys.readouterr().out
    assert json.loads((tmp_path / "bt" / "backtest.json").read_text())["lag"] == 0
    curves = pl.read_parquet(tmp_path / "bt" / "equity.parquet")
    assert {"long_short", "long_short_beta_neutral", "universe_equal_weight"} <= set(curves["book"])
    assert (tmp_path / "bt" / "equity.csv").is_file()
    for png in ("equity.png", "drawdown.png"):
        assert (tmp_path / "bt" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predictions_frame_round_trip_and_ranks():
    pred = np.array([[[0.3], [0.1], [np.nan]], [[0.0], [0.2], [0.5]]])  # [D=2, N=3, H=1]
    dates = np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[D]")
    frame = arrays_to_frame(dates, np.array(["A", "B", "C"]), [1], pred)
    assert frame.filter(pl.col("Date") == pl.date(2024, 1, 2))["rank_1d"].to_list() == [3.0, 2.0, 1.0]
    back = frame_to_arrays(frame)
    np.testing.assert_array_equal(np.isnan(back.pred), np.isnan(pred))
    np.testing.assert_allclose(back.pred[np.isfinite(pred)], pred[np.isfinite(pred)], rtol=1e-6)


def test_predictions_without_pred_columns_are_refused(tmp_path):
    pl.DataFrame({"Code": ["A"], "Date": ["2024-01-01"], "score": [1.0]}).write_parquet(tmp_path / "x.parquet")
    with pytest.raises(InputError, match="pred_"):
        read_predictions(tmp_path / "x.parquet")


def test_cli_backtest_dispatches_and_reports_bad_input_in_one_line(tmp_path, capsys):
    from atft.cli import main

    rng = np.random.default_rng(3)
    dates = np.datetime64("2024-01-01") + np.arange(20)
    frame = arrays_to_frame(dates, np.array([f"C{i}" for i in range(10)]), [1], rng.normal(size=(20, 10, 1)),
                            rng.normal(0, 0.01, size=(20, 10, 1)))
    frame.write_parquet(tmp_path / "p.parquet")
    assert main(["backtest", "--predictions", str(tmp_path / "p.parquet"), "--out", str(tmp_path / "o"),
                 "--top-k", "3", "--n-drop", "1"]) == 0
    assert json.loads((tmp_path / "o" / "backtest.json").read_text())["lag"] == 1  # the stated default
    assert main(["backtest", "--predictions", str(tmp_path / "missing.parquet")]) == 2
    assert "missing.parquet does not exist" in capsys.readouterr().err
