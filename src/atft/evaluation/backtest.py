"""Backtests of a predictions file: the staggered quintile long-short book and a Qlib-style long-only
top-k-with-dropout book against the equal-weight universe, with costs and an execution lag.

Execution lag (default 1 day, as everywhere in :mod:`atft.evaluation.metrics`): features of day ``t``
use ``Close(t)``, which is only known after the close, so a realistic position is built at the close of
``t + 1`` and first earns ``Close(t+2)/Close(t+1) - 1``. Lag 0 (trade at the close of ``t``) is not
tradeable; the gap between the two is the cost of that optimism. Every book, the equal-weight
benchmark included, holds on row ``t`` the stocks that had a prediction on ``t - lag``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import polars as pl

from atft.errors import InputError
from atft.evaluation import metrics as mt
from atft.evaluation.beta import beta_neutral_returns
from atft.evaluation.leaderboard import clean_json
from atft.evaluation.metrics import lag_days
from atft.evaluation.predictions import frame_to_arrays, read_predictions
from atft.io_utils import atomic_write, write_json, write_parquet

log = logging.getLogger(__name__)


def topk_dropout_weights(pred: np.ndarray, valid: np.ndarray, k: int, n_drop: int) -> np.ndarray:
    """Long-only equal-weight book of ``k`` stocks, replacing at most ``n_drop`` per day (Qlib TopkDropout).

    Each day the held stocks that are no longer valid are sold; then the ``n_drop`` lowest-predicted
    holdings are swapped for the best-predicted stocks not held, but only where the newcomer's
    prediction is higher; empty slots are filled from the best not held. Weight 1/k per holding. # [D, N]
    """
    d_count, n = pred.shape
    weights = np.zeros((d_count, n))
    held: list[int] = []
    for t in range(d_count):
        ok = valid[t] & np.isfinite(pred[t])
        held = [i for i in held if ok[i]]
        order = [int(i) for i in np.argsort(-np.where(ok, pred[t], -np.inf)) if ok[i]]
        held_set = set(held)
        outside = [i for i in order if i not in held_set]
        worst = sorted(held, key=lambda i: pred[t, i])[:n_drop]
        for old, new in zip(worst, outside[:n_drop]):
            if pred[t, new] > pred[t, old]:
                held.remove(old)
                held.append(new)
        held_set = set(held)
        held += [i for i in order if i not in held_set][: max(0, k - len(held))]
        if held:
            weights[t, held] = 1.0 / k
    return weights


def universe_weights(valid: np.ndarray) -> np.ndarray:
    """Equal weight on every stock the books may hold on row t (``valid``); a held stock whose return
    is missing earns 0, as in every book: admitting only stocks with a row on t + 1 would look ahead. # [D, N]"""
    weights = np.where(valid, 1.0, 0.0)
    return weights / np.maximum(weights.sum(1, keepdims=True), 1.0)


def _book_frame(dates, name: str, book: dict[str, np.ndarray]) -> pl.DataFrame:
    net = book["net"]
    return pl.DataFrame({"Date": dates, "book": name, "gross": book["gross"], "net": net,
                         "turnover": book["turnover"], "equity_net": mt.equity_curve(net),
                         "drawdown_net": mt.drawdown(net)}).with_columns(pl.col("Date").cast(pl.Date))


def _summary(book: dict[str, np.ndarray], horizon: int) -> dict[str, float]:
    gross, net = book["gross"], book["net"]
    days = int(np.isfinite(gross).sum())
    return {"sharpe": mt.sharpe(gross), "sharpe_net": mt.sharpe(net),
            "sharpe_se": mt.book_sharpe_se(gross, horizon), "ann_return": mt.annualised_return(gross),
            "ann_return_net": mt.annualised_return(net), "max_drawdown_net": mt.max_drawdown(net),
            "turnover": float(np.nanmean(book["turnover"])) if days else math.nan,
            "hit_rate": mt.hit_rate(net), "days": days}


def backtest_books(pred: np.ndarray, returns_1d: np.ndarray, horizon: int, cost_bps: float, lag: int,
                   top_k: int | None = None, n_drop: int | None = None, quantile: float = 0.2) -> dict:
    """Daily returns of every book. ``pred``/``returns_1d`` ``[D, N]``; returns ``{name: {gross, net, turnover}}``."""
    lagged = lag_days(np.asarray(pred, dtype=np.float64), lag)  # [D, N]: row t holds pred of t - lag
    valid = np.isfinite(lagged)
    typical_n = int(np.median(valid.sum(1)[valid.any(1)])) if valid.any() else 0
    k = top_k or max(1, round(0.1 * typical_n))
    drop = n_drop if n_drop is not None else max(1, k // 5)
    books = {"long_short": mt.long_short_returns(lagged, returns_1d, valid, horizon, quantile, cost_bps)}
    neutral = beta_neutral_returns(returns_1d)
    books["long_short_beta_neutral"] = mt.long_short_returns(lagged, neutral, valid, horizon, quantile, cost_bps)
    books[f"top{k}_drop{drop}"] = mt.book_returns(topk_dropout_weights(lagged, valid, k, drop), returns_1d, cost_bps)
    books["universe_equal_weight"] = mt.book_returns(universe_weights(valid), returns_1d, cost_bps)
    top, bench = books[f"top{k}_drop{drop}"], books["universe_equal_weight"]
    books[f"top{k}_excess"] = {key: top[key] - bench[key] if key != "turnover" else top[key] for key in top}
    for book in books.values():  # days before the first lagged prediction are not part of the test
        book["gross"][:lag], book["net"][:lag] = np.nan, np.nan
    return books


def _plot(frame: pl.DataFrame, column: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for name in frame["book"].unique(maintain_order=True).to_list():
        part = frame.filter(pl.col("book") == name)
        ax.plot(part["Date"].to_numpy(), part[column].to_numpy(), label=name)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=90, format="png"))
    plt.close(fig)


def run_backtest(predictions, cost_bps: float = 10.0, lag: int = 1, top_k: int | None = None,
                 n_drop: int | None = None, horizon: int | None = None, out=None) -> dict:
    """Backtest a predictions file; write equity curves (parquet + csv), a summary JSON and plots.

    Args:
        predictions: parquet with ``Code, Date, pred_{h}d`` and ``target_1d`` (the next-day return).
        cost_bps: one-way cost per unit traded (default 10). lag: execution lag in days (default 1).
        top_k / n_drop: long-only book size / daily replacements (default 10% of the universe, k // 5).
        horizon: which ``pred_{h}d`` to trade (default the shortest); h > 1 uses h staggered sub-books.
        out: output folder (default: ``backtest/`` next to the predictions file).
    """
    path = Path(predictions)
    arrays = frame_to_arrays(read_predictions(path))
    horizon = horizon or arrays.horizons[0]
    if horizon not in arrays.horizons:
        raise InputError(f"predictions file {path} has no pred_{horizon}d (horizons: {arrays.horizons})")
    returns_1d = arrays.daily_returns()
    if returns_1d is None:
        raise InputError(f"predictions file {path} has no target_1d column: the backtest needs next-day returns")
    out = Path(out) if out else path.parent / "backtest"
    out.mkdir(parents=True, exist_ok=True)
    books = backtest_books(arrays.pred[..., arrays.horizons.index(horizon)], returns_1d, horizon, cost_bps,
                           lag, top_k, n_drop)
    frame = pl.concat([_book_frame(arrays.dates, name, book) for name, book in books.items()])
    write_parquet(frame, out / "equity.parquet")
    atomic_write(out / "equity.csv", frame.write_csv)
    summary = {"predictions": str(path), "horizon": horizon, "cost_bps": cost_bps, "lag": lag,
               "books": {name: _summary(book, horizon) for name, book in books.items()},
               "se_method": mt.se_note(horizon, int(np.isfinite(books["long_short"]["gross"]).sum()))}
    write_json(out / "backtest.json", clean_json(summary))
    _plot(frame, "equity_net", f"equity (net of {cost_bps:g} bps, {mt.lag_label(lag)})", out / "equity.png")
    _plot(frame, "drawdown_net", "drawdown (net)", out / "drawdown.png")
    print(format_backtest(summary))
    return summary


def format_backtest(summary: dict) -> str:
    head = (f"backtest h={summary['horizon']}d cost={summary['cost_bps']:g}bps "
            f"execution {mt.lag_label(summary['lag'])}")
    lines = [head, f"{'book':<26}{'days':>6}{'Sharpe':>9}{'net':>8}{'±SE':>7}{'ann.ret':>9}{'maxDD':>8}{'turn':>7}"]
    for name, s in summary["books"].items():
        lines.append(f"{name:<26}{s['days']:>6}{s['sharpe']:>9.2f}{s['sharpe_net']:>8.2f}{s['sharpe_se']:>7.2f}"
                     f"{s['ann_return_net']:>9.2%}{s['max_drawdown_net']:>8.2%}{s['turnover']:>7.2f}")
    if summary.get("se_method"):
        lines.append(f"±SE of the Sharpe: Lo (2002) with the variance of the mean by "
                     f"{summary['se_method'].removeprefix('SE: ')}")
    return "\n".join(lines)
