"""``atft predict``: the file a trading system consumes — ``Code, Date, pred_{h}d, rank_{h}d`` (+ quantiles).

Rank 1 is the day's highest prediction. The dataset must have exactly the checkpoint's features (it is
refused otherwise, naming the difference) and is scaled with the training scaler from the run folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from atft.errors import InputError
from atft.evaluation.inference import load_matching_panel, load_module, predict_days
from atft.evaluation.predictions import arrays_to_frame
from atft.io_utils import write_parquet

log = logging.getLogger(__name__)


def _days(panel, date: str | None) -> np.ndarray:
    if date is None:
        return np.arange(len(panel.dates))
    try:
        wanted = np.datetime64(str(date), "D")
    except ValueError:
        raise InputError(f"--date {date!r}: expected YYYY-MM-DD") from None
    hit = np.flatnonzero(panel.dates == wanted)
    if not len(hit):
        raise InputError(f"--date {date} is not a trading day of {panel.source} "
                         f"({panel.dates[0]} … {panel.dates[-1]})")
    return hit


def predict(checkpoint, data_path, out, date: str | None = None) -> Path:
    """Predict every day (or ``date``) of ``data_path`` with ``checkpoint``; write ``out`` (parquet)."""
    module, record = load_module(checkpoint)
    panel = load_matching_panel(data_path, module, record)
    result = predict_days(module, panel, _days(panel, date))
    days = result.days
    quantiles = None if result.quantiles is None else result.quantiles[days]  # [D, N, H, Q]
    frame = arrays_to_frame(panel.dates[days], panel.codes, module.horizons, result.pred[days],
                            quantiles=quantiles, quantile_levels=module.model.quantiles)
    if frame.height == 0:
        raise InputError(f"no stock of {data_path} has enough history to predict "
                         f"{'on ' + date if date else 'any day'} (lookback {module.cfg.data.lookback})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(frame.sort("Date", "Code"), out)
    print(f"{frame.height} predictions ({frame['Date'].n_unique()} days, horizons {module.horizons}) -> {out}")
    return out
