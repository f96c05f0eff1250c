"""``atft compare``: ATFT variants and baselines on the same dataset, the same date splits, the same
days and stocks, scored by the one metric function; writes ``leaderboard.md`` / ``leaderboard.json``.

Protocol: every model predicts the test days of the split (or, with ``folds``, of each walk-forward
fold, test blocks concatenated). Before scoring, every model's predictions are restricted to the
common support — the (day, stock) pairs where all models have a prediction — so no model is scored
on easier days or stocks. Long-short figures are computed on raw and on market-beta-neutral next-day
returns. Differences in mean RankIC are paired over the same days and called significant only beyond
two standard errors. On a walk-forward fold the baselines see features scaled and leakage-screened on
that fold's training days only (the ATFT folds are full ``train`` runs, which do the same).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import polars as pl
from omegaconf import OmegaConf

from atft.config import cfg_get
from atft.errors import InputError
from atft.evaluation.baselines import BASELINES, SIGNAL_FEATURES, baseline_predictions
from atft.evaluation.beta import beta_neutral_returns
from atft.evaluation.decomposition import TOTAL, decompose, oracle_components, oracle_sidecar
from atft.evaluation.leaderboard import aggregate_runs, clean_json, format_leaderboard, paired_comparisons
from atft.evaluation.metrics import SE_RULE, TRADEABLE_LAG, daily_metrics, summarise_daily
from atft.evaluation.predictions import frame_to_arrays, read_predictions
from atft.io_utils import write_json, write_parquet, write_text

log = logging.getLogger(__name__)

ATFT_VARIANTS: dict[str, list[str]] = {
    "atft": [],  # the shipped default: LayerNorm in the adaptive-norm slot, GAT on
    "atft_fan_san": ["model.adaptive_norm=fan_san"],
    "atft_fan": ["model.adaptive_norm=fan"],
    "atft_san": ["model.adaptive_norm=san"],
    "atft_no_gat": ["model.gat.enabled=false"],
    "atft_linear": ["model.deep=false"],  # the linear path alone: ATFT's per-day-normalised Ridge
    "atft_no_linear": ["model.linear_path.enabled=false", "model.linear_path.deep_init_scale=1.0"],
}
MODELS = (*ATFT_VARIANTS, *BASELINES)
SEEDLESS = ("ridge", "momentum_20d", "reversal_5d")  # deterministic: one run stands for every seed


def eval_lag(cfg, lag: int | None = None) -> int:
    """The books' execution lag: ``lag`` if given, else ``train.eval.lag`` (runs older than the key: 1)."""
    chosen = cfg_get(cfg.train.eval, "lag", TRADEABLE_LAG) if lag is None else lag
    if int(chosen) < 0:
        raise InputError(f"execution lag must be >= 0 days, got {chosen} (--lag / train.eval.lag)")
    return int(chosen)


def parse_models(models) -> list[str]:
    names = list(MODELS) if models is None else (models.split(",") if isinstance(models, str) else list(models))
    names = [m.strip() for m in names if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown or not names:
        raise InputError(f"--models {unknown[0] if unknown else models!r} is not a model; expected a comma "
                         f"list of {', '.join(MODELS)}")
    return names


def fold_splits(panel, cfg, folds: int | None) -> list:
    """The panel's own split, or ``folds`` walk-forward folds with the config's embargo and val share."""
    if not folds:
        return [panel.splits]
    from atft.data.splits import walk_forward_splits

    return walk_forward_splits(panel.dates, int(folds), max(panel.horizons),
                               val_frac=float(cfg.data.split.val_frac), embargo_days=cfg.data.split.embargo_days,
                               initial_frac=float(cfg.data.split.get("walk_forward_initial_frac", 0.5)))


def _fold_overrides(panel, split, n_folds: int) -> list[str]:
    """Explicit split dates that make ``train`` reproduce one walk-forward fold (its test runs on; we cut it)."""
    if n_folds <= 1 and split is panel.splits:
        return []
    return [f"data.split.train_end={panel.dates[split.train[-1]]}",
            f"data.split.val_end={panel.dates[split.val[-1]]}"]


def train_atft(base_cfg, overrides: list[str], run_dir: Path, run_name: str) -> pl.DataFrame:
    """Train ``base_cfg`` + dotlist ``overrides`` with ``atft.training.train.train``; its test predictions."""
    from atft.training.train import train

    cfg = OmegaConf.merge(base_cfg, OmegaConf.from_dotlist(overrides))
    cfg.run_dir, cfg.run_name = str(run_dir), run_name
    train(cfg, replace_finished=True)  # a re-run of compare into the same --out recomputes its runs
    return read_predictions(run_dir / "predictions_test.parquet")


def atft_predictions(base_cfg, panel, splits, variant: str, seed: int, out: Path,
                     variants: dict[str, list[str]] | None = None) -> np.ndarray:
    """Test predictions ``[D, N, H]`` of one variant and seed over all folds (NaN outside test blocks).

    ``variants``: name -> overrides (default ``ATFT_VARIANTS``).
    """
    pred = np.full((*panel.M.shape, len(panel.horizons)), np.nan)
    for k, split in enumerate(splits):
        fold = f"fold{k}" if len(splits) > 1 else ""
        run_dir = (out / variant / f"seed{seed}" / fold).resolve()
        tag = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:6]  # log names unique per compare folder
        name = "_".join(p for p in (out.resolve().name, tag, variant, f"seed{seed}", fold) if p)
        overrides = [*(variants or ATFT_VARIANTS)[variant], *_fold_overrides(panel, split, len(splits)), f"seed={seed}"]
        frame = train_atft(base_cfg, overrides, run_dir, name)
        arrays = frame_to_arrays(frame, panel.horizons, dates=panel.dates, codes=panel.codes)
        pred[split.test] = arrays.pred[split.test]
    return pred


def fold_panel(data_path: Path, cfg, panel, split):
    """The panel the baselines of ``split`` see: scaler and leakage screen fitted on its training days only.

    The common ``panel`` was fitted on the config's own training split, which for an early walk-forward
    fold reaches past the fold's training block; so each fold other than that split reloads the data.
    """
    if split is panel.splits:
        return panel
    from atft.data.panel import load_panel

    refit = load_panel(data_path, cfg.data, model_cfg=cfg.model, fit_days=split.train)
    assert np.array_equal(refit.dates, panel.dates) and np.array_equal(refit.codes, panel.codes)
    return refit


def baseline_runs(names: list[str], cfg, data_path: Path, panel, splits, seeds: int) -> dict:
    """Test predictions ``[D, N, H]`` of every baseline in ``names`` and seed, over all folds.

    Fold-outer so that one refitted panel is loaded per fold, shared by every baseline and seed of that
    fold, and released before the next fold is loaded.
    """
    names = [n for n in names if n in BASELINES]
    shape = (*panel.M.shape, len(panel.horizons))
    preds = {n: [np.full(shape, np.nan) for _ in range(1 if n in SEEDLESS else seeds)] for n in names}
    for split in splits if names else []:
        fitted = fold_panel(data_path, cfg, panel, split)
        for name, runs in preds.items():
            for seed, pred in enumerate(runs):
                pred[split.test] = baseline_predictions(name, fitted, split, seed=seed)[split.test]
    return preds


def oracle_predictions(data_path: Path, panel, sidecar: tuple | None = None) -> np.ndarray | None:
    """``oracle_{h}d`` of the synthetic generator's sidecar ``<name>.oracle.parquet``, if there is one.

    ``sidecar``: ``(path, frame)`` already read by :func:`oracle_sidecar` (None: read it here).
    """
    sidecar = sidecar or oracle_sidecar(data_path)
    if sidecar is None:
        return None
    sidecar, frame = sidecar
    missing = [h for h in panel.horizons if f"oracle_{h}d" not in frame.columns]
    if missing:
        raise InputError(f"oracle sidecar {sidecar} lacks oracle_{missing[0]}d")
    renamed = frame.rename({f"oracle_{h}d": f"pred_{h}d" for h in panel.horizons})
    return frame_to_arrays(renamed, panel.horizons, dates=panel.dates, codes=panel.codes).pred


def forward_targets(panel, days: np.ndarray) -> np.ndarray:
    """``target_{h}d`` of ``t + 1`` on the global day axis for each of ``days``: the return a lag-1 book
    can still earn (NaN on the panel's last day). # [len(days), N, H]"""
    y = np.where(panel.Y_mask, panel.Y, np.nan).astype(np.float64)  # [D, N, H]
    nxt = np.asarray(days) + 1
    out = np.full((len(days), *y.shape[1:]), np.nan)
    inside = nxt < y.shape[0]
    out[inside] = y[nxt[inside]]
    return out


def common_support(preds: dict[str, list[np.ndarray]], panel, test_days: np.ndarray) -> np.ndarray:
    """(day, stock) pairs of the test days where every (model, seed) has every horizon. # [D_test, N]"""
    support = np.all([np.isfinite(p[test_days]).all(-1) for runs in preds.values() for p in runs], axis=0)
    return support & panel.M[test_days]


def score(preds: dict[str, list[np.ndarray]], panel, test_days: np.ndarray, cost_bps: float,
          lag: int = TRADEABLE_LAG):
    """Metrics and daily series of every (model, seed) on the common support of the test days; books
    traded at execution ``lag``."""
    support = common_support(preds, panel, test_days)  # [D_test, N]
    h1 = panel.horizons.index(1) if 1 in panel.horizons else None
    returns = panel.Y[..., h1].astype(np.float64) if h1 is not None else None
    neutral = beta_neutral_returns(returns, panel.M)[test_days] if returns is not None else None
    returns = returns[test_days] if returns is not None else None
    target, mask = panel.Y[test_days], panel.Y_mask[test_days] & support[..., None]
    forward = np.where(support[..., None], forward_targets(panel, test_days), np.nan)  # [D_test, N, H]
    results, frames = {}, []
    for name, runs in preds.items():
        results[name] = []
        for seed, pred in enumerate(runs):
            p = np.where(support[..., None], pred[test_days], np.nan)  # [D_test, N, H]
            daily = daily_metrics(p, target, mask, panel.horizons, returns, cost_bps, valid=support,
                                  neutral_returns=neutral, lag=lag, forward_target=forward)
            results[name].append({f"{h}d": summarise_daily(s, h, cost_bps, lag=lag) for h, s in daily.items()})
            for h, series in daily.items():
                frames.append(pl.DataFrame({"Date": panel.dates[test_days], "model": name, "seed": seed,
                                            "horizon": h, **series}))
    daily_frame = pl.concat(frames).with_columns(pl.col("Date").cast(pl.Date))
    return results, daily_frame, int(support.any(1).sum())


def compare(data_path, seeds: int = 1, out="runs/compare", folds: int | None = None, models=None,
            max_epochs: int | None = None, cost_bps: float | None = None, overrides=(),
            lag: int | None = None) -> dict:
    """Train and score every selected model with ``seeds`` seeds; write the leaderboard files.

    Args:
        data_path: ML dataset parquet. seeds: K seeds per model (deterministic baselines run once).
        out: output folder (ATFT runs go to ``out/<variant>/seed<k>[/fold<j>]``).
        folds: walk-forward folds (None: the config's single split).
        models: comma list or list of names (default: all of ``MODELS``).
        max_epochs: ATFT epochs; cost_bps: one-way cost (default ``train.eval.cost_bps``).
        overrides: Hydra overrides applied to every ATFT run and to the panel.
        lag: execution lag of the books (default ``train.eval.lag``, 1; 0 is not tradeable).
    """
    from atft.config import load_config

    names = parse_models(models)
    base = [f"data.path={data_path}", *overrides]
    base += [f"train.trainer.max_epochs={max_epochs}"] if max_epochs else []
    cfg = load_config(base)
    cost = float(cfg.train.eval.cost_bps if cost_bps is None else cost_bps)
    return run_models(cfg, Path(data_path), names, int(seeds), folds, Path(out), cost, eval_lag(cfg, lag))


def walk_forward_run(cfg, data_path: Path, folds: int, out: Path, cost_bps: float,
                     lag: int = TRADEABLE_LAG) -> dict:
    """``evaluate --folds``: retrain a run's config on each fold, beside the free baselines."""
    return run_models(cfg, Path(data_path), ["atft", "momentum_20d", "reversal_5d"], 1, folds, out, cost_bps,
                      lag)


def run_models(cfg, data_path: Path, names: list[str], seeds: int, folds: int | None, out: Path,
               cost: float, lag: int = TRADEABLE_LAG, variants: dict[str, list[str]] | None = None) -> dict:
    """Predict with every model and seed on the (walk-forward) test days, score, write the leaderboard.

    ``variants``: ATFT name -> overrides (default ``ATFT_VARIANTS``; ``atft tune --refit`` passes its own).
    """
    from atft.data.panel import load_panel

    cfg = OmegaConf.merge(cfg, {"data": {"path": str(data_path)}})
    panel = load_panel(data_path, cfg.data, model_cfg=cfg.model)
    splits = fold_splits(panel, cfg, folds)
    test_days = np.unique(np.concatenate([s.test for s in splits]))
    out.mkdir(parents=True, exist_ok=True)
    missing = [n for n in names if n in SIGNAL_FEATURES and SIGNAL_FEATURES[n][0] not in panel.feature_names]
    for name in missing:
        log.warning("compare: skipping %s (no %s column)", name, SIGNAL_FEATURES[name][0])
    names = [n for n in names if n not in missing]
    baselines = baseline_runs(names, cfg, data_path, panel, splits, seeds)
    preds = {}
    for name in names:
        preds[name] = baselines[name] if name in baselines else [
            atft_predictions(cfg, panel, splits, name, seed, out, variants) for seed in range(seeds)]
        log.info("compare: %s done (%d run(s))", name, len(preds[name]))
    sidecar = oracle_sidecar(data_path)
    oracle = oracle_predictions(data_path, panel, sidecar)
    scored = preds | ({"oracle": [oracle]} if oracle is not None else {})
    results, daily, days = score(scored, panel, test_days, cost, lag)
    board = aggregate_runs(results, oracle="oracle" if oracle is not None else None)
    parts = oracle_components(sidecar[1] if sidecar else None, panel)
    if parts:  # a planted market with components: each model's RankIC against each of them
        support = common_support(scored, panel, test_days)
        board["decomposition"] = decompose(scored, {TOTAL: oracle, **parts}, support, test_days, panel.horizons)
    board.update({"dataset": str(data_path), "cost_bps": cost, "lag": lag, "se_method": SE_RULE, "seeds": seeds,
                  "folds": int(folds or 0), "horizons": panel.horizons, "test_days": days,
                  "models_run": list(preds),
                  "test_first": str(panel.dates[test_days[0]]), "test_last": str(panel.dates[test_days[-1]]),
                  "comparisons": paired_comparisons(daily, list(preds))})
    write_parquet(daily, out / "daily.parquet")
    write_json(out / "leaderboard.json", clean_json(board))
    write_text(out / "leaderboard.md", format_leaderboard(board))
    OmegaConf.save(cfg, out / "config.yaml")
    print(format_leaderboard(board))
    return board
