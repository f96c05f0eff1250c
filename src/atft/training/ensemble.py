"""Seed ensembles (``train.ensemble.seeds=K``): K runs differing only in their seed, predictions averaged.

Run folder::

    seed0/ .. seed<K-1>/       complete member runs (config, checkpoints, metrics, predictions)
    config.yaml                the resolved config of the ensemble
    predictions_test.parquet   the members' test predictions averaged per (Code, Date, horizon)
    metrics.json               {"test": ensemble metrics, "members": [...], "spread": {...}, "info": {...}}

Each member selects its own checkpoint on validation; the test split is scored once per member and
once for the average. ``spread`` reports, per horizon, the mean and standard deviation across members
of the test IC / RankIC, so a reader sees how much of a result is the seed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from atft.config import save_config
from atft.evaluation.metrics import evaluate_predictions
from atft.evaluation.predictions import arrays_to_frame, frame_to_arrays, read_predictions
from atft.io_utils import clean_json, write_json, write_parquet

log = logging.getLogger("atft.training")


def average_predictions(paths: list[Path]):
    """Mean prediction over the member files on their union of (Date, Code); the targets of the first."""
    frames = [read_predictions(p) for p in paths]
    arrays = frame_to_arrays(frames[0])
    dates = np.unique(np.concatenate([f["Date"].to_numpy() for f in frames]).astype("datetime64[D]"))
    codes = np.unique(np.concatenate([f["Code"].to_numpy().astype(str) for f in frames]))
    members = [frame_to_arrays(f, arrays.horizons, dates=dates, codes=codes) for f in frames]
    with np.errstate(invalid="ignore"), np.testing.suppress_warnings() as sup:
        sup.filter(RuntimeWarning)  # cells no member predicted stay NaN
        pred = np.nanmean(np.stack([m.pred for m in members]), axis=0)  # [D, N, H]
    target = np.fmax.reduce([m.target for m in members])  # the same realised returns in every member
    return dates, codes, members[0].horizons, pred, target


def spread(members: list[dict], horizons: list[int]) -> dict:
    """Mean and std across members of each horizon's test IC / RankIC."""
    out = {}
    for h in horizons:
        ic = np.array([m["test"][f"{h}d"]["ic"] for m in members], dtype=float)
        ric = np.array([m["test"][f"{h}d"]["rank_ic"] for m in members], dtype=float)
        out[f"{h}d"] = {"ic_mean": float(np.nanmean(ic)), "ic_std": float(np.nanstd(ic, ddof=1)),
                        "rank_ic_mean": float(np.nanmean(ric)), "rank_ic_std": float(np.nanstd(ric, ddof=1)),
                        "rank_ic_members": ric.tolist()}
    return out


def train_ensemble(cfg, seeds: int, train_one, resume_from: str | None = None) -> dict:
    """Train ``seeds`` members with ``train_one`` and write the ensemble's predictions and metrics."""
    from atft.training.train import resolve_run_dir

    run_dir = resolve_run_dir(cfg)
    base_name = cfg.get("run_name") or run_dir.name
    members = []
    for k in range(seeds):
        member = OmegaConf.merge(cfg, {"seed": int(cfg.seed) + k, "run_dir": str(run_dir / f"seed{k}"),
                                       "run_name": f"{base_name}_seed{k}", "train": {"ensemble": {"seeds": 1}}})
        result = train_one(member, resume_from if k == 0 else None)
        if not result:  # a DDP worker rank: rank 0 writes the ensemble
            return {}
        members.append(result)
    cfg.run_dir, cfg.run_name = str(run_dir), base_name
    save_config(cfg, run_dir / "config.yaml")
    dates, codes, horizons, pred, target = average_predictions(
        [run_dir / f"seed{k}" / "predictions_test.parquet" for k in range(seeds)])
    write_parquet(arrays_to_frame(dates, codes, horizons, pred, target), run_dir / "predictions_test.parquet")
    cost = float(cfg.train.eval.cost_bps)
    test = evaluate_predictions(pred, target, np.isfinite(target), horizons, None, cost,
                                valid=np.isfinite(pred).all(-1), lag=int(cfg.train.eval.get("lag", 1)))
    result = clean_json({"test": test, "members": [{"seed": int(cfg.seed) + k, "val": m["val"], "test": m["test"]}
                                                    for k, m in enumerate(members)],
                         "spread": spread(members, horizons),
                         "info": {"ensemble_seeds": seeds, "cost_bps": cost, **members[0]["info"]}})
    write_json(run_dir / "metrics.json", result)
    h = f"{int(cfg.train.eval.primary_horizon)}d" if f"{int(cfg.train.eval.primary_horizon)}d" in test else \
        f"{horizons[0]}d"
    s = result["spread"][h]
    log.info("Ensemble of %d seeds (test, %s): RankIC %.4f | members %.4f +- %.4f (std across seeds)", seeds, h,
             test[h]["rank_ic"], s["rank_ic_mean"], s["rank_ic_std"])
    return result
