"""``atft evaluate``: every metric of a trained model on a split, beside the free baselines (20-day
momentum, 5-day reversal) scored on the same days and stocks; JSON + daily series to the run folder
and a table on the console.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from atft.errors import InputError
from atft.evaluation.baselines import SIGNAL_FEATURES, baseline_predictions
from atft.evaluation.leaderboard import aggregate_runs, clean_json, lag_text, paired_comparisons
from atft.evaluation.metrics import SE_RULE, TRADEABLE_LAG, hac_lags, lag_label
from atft.io_utils import read_json, write_json, write_parquet

log = logging.getLogger(__name__)


def _resolve(run_dir, checkpoint, data_path):
    """``(run_dir, checkpoint, cfg, data_path)`` from whichever of them were given."""
    if run_dir is None and checkpoint is None:
        raise InputError("evaluate needs --run RUN_DIR or --checkpoint CKPT (with --data-path)")
    run_dir = Path(run_dir) if run_dir else Path(checkpoint).resolve().parent.parent
    checkpoint = Path(checkpoint) if checkpoint else run_dir / "checkpoints" / "best.ckpt"
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise InputError(f"run folder {run_dir} has no config.yaml (expected a folder written by `atft train`)")
    try:
        cfg = OmegaConf.load(cfg_path)
    except Exception as exc:  # noqa: BLE001 - yaml/omegaconf raise many types for a damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise InputError(f"run config {cfg_path} is damaged (not valid YAML: {first}); restore it") from None
    return run_dir, checkpoint, cfg, Path(data_path or cfg.data.path)


def run_splits_cfg(cfg, run_dir: Path):
    """``cfg`` with the run's own split boundaries (``data.json``) as explicit dates, so a rebuilt or longer
    dataset can never move validation or test days onto dates the model trained on."""
    record = run_dir / "data.json"
    if not record.is_file():
        return cfg
    splits = read_json(record, "run record")["splits"]
    if not (splits["train"]["last"] and splits["val"]["last"]):
        return cfg
    return OmegaConf.merge(cfg, {"data": {"split": {"train_end": splits["train"]["last"],
                                                    "val_end": splits["val"]["last"],
                                                    "embargo_days": splits["embargo_days"]}}})


def _model_pred(run_dir: Path, checkpoint: Path, cfg, data_path: Path, days: np.ndarray, split: str,
                panel) -> np.ndarray:
    """The run's predictions over the panel ``[D, N, H]``: the saved file when it is this run's own best
    checkpoint on its own dataset, else inference with ``checkpoint`` on ``days``."""
    from atft.evaluation.predictions import frame_to_arrays, read_predictions

    saved = run_dir / f"predictions_{split}.parquet"
    own_data = Path(data_path).resolve() == Path(cfg.data.path).resolve()
    own_best = Path(checkpoint).resolve() == (run_dir / "checkpoints" / "best.ckpt").resolve()
    if saved.is_file() and own_data and own_best:
        return frame_to_arrays(read_predictions(saved), panel.horizons, dates=panel.dates, codes=panel.codes).pred
    from atft.evaluation.inference import load_matching_panel, load_module, predict_days

    module, record = load_module(checkpoint)
    matched = load_matching_panel(data_path, module, record)
    if not np.array_equal(matched.dates, panel.dates) or not np.array_equal(matched.codes, panel.codes):
        raise InputError(f"dataset {data_path}: dates/codes differ between the checkpoint's and the run's view")
    return predict_days(module, matched, days).pred


def format_metrics_table(result: dict) -> str:
    """Console table: one line per model and horizon, and a footnote naming the SE and the books' lag."""
    lag = int(result.get("lag", TRADEABLE_LAG))
    lines = [f"split={result['split']} days={result['days']} ({result['first']} … {result['last']}) "
             f"cost={result['cost_bps']:g}bps one-way; books at {lag_text(lag)}",
             f"{'model':<14}{'h':>4}{'IC':>8}{'RankIC':>8}{'±SE':>7}{'t':>6}{'ICIR':>7}{'hit':>6}{'Sharpe':>8}"
             f"{'net':>7}{'β-neut':>7}{'ann.net':>9}{'maxDD':>8}{'turn':>6}{'days':>6}"]
    for name, by_h in result["models"].items():
        for h, m in by_h.items():
            def g(key, m=m):
                v = m.get(key, {}).get("mean", math.nan)
                return v if v is not None else math.nan

            lines.append(f"{name:<14}{h:>4}{g('ic'):>8.4f}{g('rank_ic'):>8.4f}{g('rank_ic_se'):>7.4f}"
                         f"{g('tstat'):>6.1f}{g('icir'):>7.2f}{g('hit_rate'):>6.2f}{g('sharpe'):>8.2f}"
                         f"{g('sharpe_net'):>7.2f}{g('sharpe_net_beta_neutral'):>7.2f}{g('ann_return_net'):>9.1%}"
                         f"{g('max_drawdown_net'):>8.1%}{g('turnover'):>6.2f}{g('days'):>6.0f}")
    lags = ", ".join(f"{h} {int(m.get('se_lags', hac_lags(int(result['days']), int(h.rstrip('d')))))}"
                     for h, m in result["metrics"].items())
    lines.append(f"±SE, t: {SE_RULE} ({lags}); "
                 f"Sharpe = Sharpe({lag_label(lag)})")
    return "\n".join(lines)


def evaluate(run_dir=None, checkpoint=None, data_path=None, split: str = "test", cost_bps: float | None = None,
             folds: int | None = None, lag: int | None = None) -> dict:
    """Score a run (or checkpoint) on ``split``; write ``evaluation_<split>.json`` and ``daily_<split>.parquet``.

    Args:
        run_dir / checkpoint: the trained run (checkpoint default ``<run>/checkpoints/best.ckpt``).
        data_path: dataset (default: the run's ``data.path``). split: ``val`` or ``test``.
        cost_bps: one-way cost (default the run's ``train.eval.cost_bps``).
        folds: walk-forward: retrain the run's config on K rolling-origin folds (see ``compare``).
        lag: execution lag of the books (default the run's ``train.eval.lag``, 1; 0 is not tradeable).
    """
    from atft.data.panel import load_panel
    from atft.data.splits import Splits
    from atft.evaluation.compare import eval_lag, score, walk_forward_run

    run_dir, checkpoint, cfg, data_path = _resolve(run_dir, checkpoint, data_path)
    cost, lag = float(cfg.train.eval.cost_bps if cost_bps is None else cost_bps), eval_lag(cfg, lag)
    if folds:
        return walk_forward_run(cfg, data_path, int(folds), run_dir / "walk_forward", cost, lag)
    panel = load_panel(data_path, run_splits_cfg(cfg, run_dir).data, model_cfg=cfg.model)
    days = getattr(panel.splits, split)
    if not len(days):
        raise InputError(f"dataset {data_path} has no {split} days after the run's split boundaries")
    preds = {"atft": [_model_pred(run_dir, checkpoint, cfg, data_path, days, split, panel)]}
    for name, (feature, _) in SIGNAL_FEATURES.items():
        if feature in panel.feature_names:
            only = Splits(panel.splits.train, panel.splits.val, days, panel.splits.embargo)
            preds[name] = [baseline_predictions(name, panel, only)]
    results, daily, n_days = score(preds, panel, days, cost, lag)
    result = {"split": split, "cost_bps": cost, "lag": lag, "se_method": SE_RULE, "days": n_days,
              "first": str(panel.dates[days[0]]), "last": str(panel.dates[days[-1]]), "dataset": str(data_path), "checkpoint": str(checkpoint),
              **aggregate_runs(results), "metrics": results["atft"][0],
              "comparisons": paired_comparisons(daily, list(preds))}
    write_parquet(daily, run_dir / f"daily_{split}.parquet")
    write_json(run_dir / f"evaluation_{split}.json", clean_json(result))
    print(format_metrics_table(result))
    return result
