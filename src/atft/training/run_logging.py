"""Run logging: the log file ``_logs/training/<run>.log`` + console, and the per-epoch summary line.

Every tagged line of the training (``[GRAD-MONITOR]``, ``[ENCODER-GRAD]``, ``[DEGENERACY-GUARD]``) and
the epoch line go through the ``atft.training`` logger, so the seed's ``grep`` commands work on the file.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

import lightning.pytorch as pl

from atft.evaluation.metrics import TRADEABLE_LAG, lag_label
from atft.io_utils import clean_json
from atft.redaction import RedactingFilter

log = logging.getLogger("atft.training")
FORMAT = "%(asctime)s %(levelname)s %(message)s"


def setup_run_logging(log_file: Path | None, console: bool = True) -> list[logging.Handler]:
    """Attach a file handler (``log_file``; None: none) and a stdout handler to ``atft``'s loggers.

    Returns the handlers, to be passed to :func:`teardown_run_logging` when the run ends.
    """
    root = logging.getLogger("atft")
    root.setLevel(logging.INFO)
    handlers: list[logging.Handler] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    if console:
        handlers.append(logging.StreamHandler(sys.stdout))
    redacting = RedactingFilter()
    for handler in handlers:
        handler.setFormatter(logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S"))
        handler.addFilter(redacting)  # secrets never reach the log file or the console
        root.addHandler(handler)
    root.propagate = False  # pytest / the caller's root logger would print every line twice
    return handlers


def teardown_run_logging(handlers: list[logging.Handler]) -> None:
    root = logging.getLogger("atft")
    for handler in handlers:
        handler.flush()
        root.removeHandler(handler)
        handler.close()
    root.propagate = True


def _fmt(value: float, digits: int) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def epoch_line(epoch: int, max_epochs: int, train_loss: float, val_loss: float, metrics: dict,
               resets: int, seconds: float) -> str:
    """``Epoch 3/50 | Train Loss 0.1234 | Val Loss 0.1200 | Sharpe(lag1) 0.85 | IC 0.031 | RankIC 0.035 | resets 0 |
    12.3s``; the Sharpe names the execution lag of its book (``metrics["lag"]``, "lag0 not tradeable")."""
    lag = lag_label(int(metrics.get("lag", TRADEABLE_LAG)))
    return (f"Epoch {epoch}/{max_epochs} | Train Loss {_fmt(train_loss, 4)} | Val Loss {_fmt(val_loss, 4)} | "
            f"Sharpe({lag}) {_fmt(metrics.get('sharpe', math.nan), 2)} | IC {_fmt(metrics.get('ic', math.nan), 3)} | "
            f"RankIC {_fmt(metrics.get('rank_ic', math.nan), 3)} | resets {resets} | {seconds:.1f}s")


class EpochSummary(pl.Callback):
    """Writes the epoch line to the log and one record per epoch to ``metrics.jsonl`` (rank 0 only).

    The validation metrics shown are those of ``train.eval.primary_horizon`` (default 1d).
    """

    def __init__(self, metrics_path: Path):
        self.metrics_path = Path(metrics_path)
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        seconds = time.perf_counter() - self._start
        epoch = trainer.current_epoch + 1
        train_loss = pl_module.train_loss_epoch
        if pl_module._train_losses:  # the module's own epoch-end hook runs after the callbacks
            train_loss = float(sum(float(t) for t in pl_module._train_losses) / len(pl_module._train_losses))
        primary = pl_module.val_metrics.get(f"{pl_module.primary_horizon}d", {})
        log.info(epoch_line(epoch, trainer.max_epochs, train_loss, pl_module.val_loss, primary,
                            pl_module.resets_epoch, seconds))
        record = {"epoch": epoch, "step": trainer.global_step, "train_loss": train_loss,
                  "val_loss": pl_module.val_loss, "resets": pl_module.resets_epoch, "seconds": seconds,
                  "lr": trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None,
                  "val": pl_module.val_metrics}
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(clean_json(record)) + "\n")
