"""Checkpoint inference: rebuild the trained module, load a dataset exactly as training saw it (same
features in the same order, the training scaler), and predict any set of days.

The checkpoint holds the config, ``n_features`` and horizons; the feature names and scaler live in
the run folder's ``data.json`` (``<run>/checkpoints/best.ckpt`` -> ``<run>/data.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from atft.checkpoint_io import checkpoint_hparams, feature_difference, load_checkpoint, model_difference
from atft.errors import InputError
from atft.io_utils import read_json


@dataclass
class Inference:
    """Dense predictions of some days: ``pred [D, N, H]`` (NaN where no sample), feature weights ``[F]``."""

    panel: object
    days: np.ndarray  # [D_pred] day indices into panel.dates
    pred: np.ndarray  # [D, N, H] over the whole panel, NaN outside ``days`` / unusable samples
    feature_weights: np.ndarray  # [F] mean variable-selection weight over the predicted samples
    quantiles: np.ndarray | None = None  # [D, N, H, Q] for a quantile head


def run_record(checkpoint: Path) -> dict:
    """``data.json`` of the checkpoint's run folder (features, horizons, scaler)."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "data.json").is_file():
            return read_json(folder / "data.json", "run record")
    raise InputError(f"checkpoint {checkpoint} has no data.json in its run folder (expected "
                     f"{checkpoint.parent.parent / 'data.json'}, written by `atft train`)")


def load_module(checkpoint):
    """``(module, record)``: the LightningModule with the checkpoint's weights, and the run's data record."""
    from atft.training.module import ATFTLightningModule

    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    hp = checkpoint_hparams(state, checkpoint)
    record = run_record(checkpoint)
    check_record(hp, record, checkpoint)
    module = ATFTLightningModule(OmegaConf.create(hp["cfg"]), int(hp["n_features"]), list(hp["horizons"]))
    load_weights(module, state["state_dict"], checkpoint)
    module.eval()
    return module, record


def check_record(hp: dict, record: dict, checkpoint: Path) -> None:
    """Refuse a checkpoint whose model does not match its run folder's ``data.json``, naming what differs."""
    diff = model_difference(hp, list(record.get("features", [])), list(record.get("horizons", [])))
    if diff:
        raise InputError(f"checkpoint {checkpoint} does not match its run record data.json: {diff}")


def load_weights(module, state_dict: dict, checkpoint: Path) -> None:
    """``module.load_state_dict`` with a one-line error naming the first mismatched tensor."""
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise InputError(f"checkpoint {checkpoint} does not fit the model its config builds: {detail}") from None


def load_matching_panel(data_path, module, record: dict):
    """The dataset as a Panel with the checkpoint's features (same order) and training scaler.

    Refuses (InputError) a dataset whose detected features differ from the checkpoint's, naming them.
    """
    from atft.data.panel import RobustScaler, load_panel

    cfg = module.cfg
    features = list(record["features"])
    data_cfg = OmegaConf.merge(cfg.data, {"horizons": list(module.horizons)})
    probe = _detected_features(Path(data_path), data_cfg)
    diff = feature_difference(features, probe)
    if diff:
        raise InputError(f"dataset {data_path} does not match the checkpoint's {len(features)} features: {diff}")
    scaler_rec = record["scaler"]
    stats = np.array([scaler_rec["features"][f] for f in features], dtype=np.float32)  # [F, 2]
    scaler = RobustScaler(stats[:, 0], stats[:, 1], float(scaler_rec["clip"]))
    data_cfg = OmegaConf.merge(data_cfg, {"features": {"include": features, "exclude": []}})
    return load_panel(data_path, data_cfg, model_cfg=cfg.model, scaler=scaler)


def _detected_features(path: Path, data_cfg) -> list[str]:
    """Feature columns the panel loader would detect in ``path`` (schema only, no data read)."""
    import polars as pl

    from atft.data.panel import META_COLUMNS, is_target_derived

    if not path.is_file():
        raise InputError(f"dataset {path} does not exist")
    schema = pl.read_parquet_schema(path)
    include = list(data_cfg.features.get("include") or [])
    exclude = set(data_cfg.features.get("exclude") or [])
    names = include or [c for c, t in schema.items() if c not in META_COLUMNS and not is_target_derived(c)
                        and (t.is_numeric() or t == pl.Boolean)]
    return [n for n in names if n not in exclude and n in schema]


def predict_days(module, panel, days: np.ndarray, batch_size: int | None = None) -> Inference:
    """Predict the usable samples of ``days`` with the module's config (graph, lookback). # [D, N, H]"""
    from atft.training.datamodule import DayBatchDataset, PanelDataModule
    from atft.training.sampler import DayBatchSampler

    dm = PanelDataModule(module.cfg, panel)
    dm.setup("predict")
    days = np.asarray(days, dtype=np.int64)
    usable = np.zeros_like(dm.windows.sample_ok)
    usable[days] = dm.windows.sample_ok[days]
    size = int(batch_size or module.cfg.train.batch.val_batch_size)
    sampler = DayBatchSampler(days, usable[days].sum(1), size, shuffle=False, seed=0)
    loader = dm.dataloader(DayBatchDataset(dm.windows, usable, dm.graph_builder), sampler)
    try:
        out = module.predict_loader(loader, complete=dm.complete_batch)
    finally:
        dm.teardown("predict")  # the prefetch thread, also when a batch failed
    pred = np.full((*panel.M.shape, len(module.horizons)), np.nan)  # [D, N, H]
    pred[out["date_idx"], out["stock_idx"]] = out["pred"]
    weights = out["feature_weights"].mean(0)  # [F]
    quantiles = None
    if "quantiles" in out:
        quantiles = np.full((*pred.shape, out["quantiles"].shape[-1]), np.nan)  # [D, N, H, Q]
        quantiles[out["date_idx"], out["stock_idx"]] = out["quantiles"]
    return Inference(panel, days, pred, weights, quantiles)
