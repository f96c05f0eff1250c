"""Progress in the log file: steps, samples/s and ETA every N steps or seconds, and timed validation passes.

Lightning's progress bar is drawn on a terminal only (``train.trainer.enable_progress_bar``); a run started
with ``nohup … > log`` or under a scheduler shows nothing until the epoch ends. :class:`ProgressLog` writes::

    progress: epoch 2/10 step 340/1500 (global 1840) | 1,234 samples/s | 2.41 steps/s | epoch ETA 8m01s | run ETA 1h14m
    epoch 2 timing: train 612.3s, 3,140,000 samples, 5,128 samples/s | validation 41.2s, 410,000 samples | CPU 1210.4s (system 31.0s), 74,210 page faults

through the ``atft.training`` logger (file + console), and keeps one timing record per epoch
(:meth:`ProgressLog.summary`), which ``metrics.json`` carries under ``info.timing``.

Samples are the stock-day rows of each batch (``batch["y"]``); training time runs from the epoch's start to
its last optimiser step, so the validation pass (timed on its own) is not counted in the training rate. The
CPU seconds (user + system) and minor page faults are the process's over the whole epoch, validation included
(``getrusage``): a system share far above the later epochs' is the kernel mapping fresh memory
(``atft.training.allocator``).
"""

from __future__ import annotations

import logging
import time

try:
    import resource
except ImportError:  # Windows: no getrusage, the epoch record leaves the CPU figures out
    resource = None

import lightning.pytorch as pl

from atft.training.cpu_share import usage_since

log = logging.getLogger("atft.training")


def format_duration(seconds: float) -> str:
    """``42s``, ``8m01s``, ``1h14m``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def progress_line(epoch: int, max_epochs: int, step: int, steps: int | None, global_step: int, samples: int,
                  seconds: float, epoch_s_estimate: float | None, epochs_left: int) -> str:
    """One progress line; ``steps`` None (unknown epoch length) leaves out the ETAs."""
    rate = samples / seconds if seconds > 0 else 0.0
    steps_rate = step / seconds if seconds > 0 else 0.0
    line = (f"progress: epoch {epoch}/{max_epochs} step {step}/{steps if steps else '?'} (global {global_step}) | "
            f"{rate:,.0f} samples/s | {steps_rate:.2f} steps/s")
    if steps and steps_rate > 0:
        epoch_eta = (steps - step) / steps_rate
        line += f" | epoch ETA {format_duration(epoch_eta)}"
        if epoch_s_estimate is not None:
            line += f" | run ETA {format_duration(epoch_eta + epochs_left * epoch_s_estimate)}"
    return line


class ProgressLog(pl.Callback):
    """Progress lines every ``every_steps`` optimiser steps or ``every_s`` seconds (whichever first; 0: off),
    the validation pass timed, and per-epoch timing records (rank 0 logs; every rank counts).

    Args:
        every_steps: steps between progress lines (``train.progress.every_steps``).
        every_s: seconds between progress lines (``train.progress.every_s``).
        clock: time source (tests pass a fake one).
    """

    def __init__(self, every_steps: int = 50, every_s: float = 60.0, clock=time.perf_counter):
        self.every_steps, self.every_s, self.clock = int(every_steps or 0), float(every_s or 0.0), clock
        self.epochs: list[dict] = []
        self._val_start: float | None = None
        self._epoch_start = self._last_line = self._last_step_end = 0.0
        self._steps = self._samples = 0
        self._val_s = 0.0
        self._val_samples = 0
        self._usage = None

    @classmethod
    def from_config(cls, cfg) -> ProgressLog:
        p = cfg.train.get("progress") or {}
        return cls(int(p.get("every_steps") or 0), float(p.get("every_s") or 0.0))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._usage = resource.getrusage(resource.RUSAGE_SELF) if resource is not None else None
        self._epoch_start = self._last_line = self._last_step_end = self.clock()
        self._steps = self._samples = self._val_samples = 0
        self._val_s = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = self.clock()
        self._steps += 1
        self._samples += int(batch["y"].shape[0])
        self._last_step_end = now
        due_steps = self.every_steps > 0 and self._steps % self.every_steps == 0
        due_time = self.every_s > 0 and now - self._last_line >= self.every_s
        if (due_steps or due_time) and trainer.is_global_zero:
            self._last_line = now
            log.info(self._line(trainer, now))

    def _line(self, trainer, now: float) -> str:
        steps = trainer.num_training_batches
        steps = int(steps) if isinstance(steps, (int, float)) and steps != float("inf") else None
        full = [e["train_s"] + e["val_s"] for e in self.epochs]
        estimate = sum(full) / len(full) if full else None
        if estimate is None and steps:  # first epoch: scale this epoch's pace to its full length
            estimate = (now - self._epoch_start) * steps / max(self._steps, 1)
        epochs_left = max(0, int(trainer.max_epochs or 0) - trainer.current_epoch - 1)
        return progress_line(trainer.current_epoch + 1, int(trainer.max_epochs or 0), self._steps, steps,
                             trainer.global_step, self._samples, now - self._epoch_start, estimate, epochs_left)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._val_start = self.clock()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if self._val_start is not None:
            self._val_samples += int(batch["y"].shape[0])

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._val_start is not None:
            self._val_s += self.clock() - self._val_start
            self._val_start = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        train_s = max(self._last_step_end - self._epoch_start, 1e-9)
        record = {"epoch": trainer.current_epoch + 1, "steps": self._steps, "train_s": train_s,
                  "train_samples": self._samples, "train_samples_per_s": self._samples / train_s,
                  "val_s": self._val_s, "val_samples": self._val_samples}
        usage = ""
        if self._usage is not None:
            record.update(usage_since(self._usage))
            usage = (f" | CPU {record['cpu_s']:.1f}s (system {record['system_s']:.1f}s), "
                     f"{record['minor_faults']:,} page faults")
        self.epochs.append(record)
        if trainer.is_global_zero:
            log.info("epoch %d timing: train %.1fs, %s samples, %s samples/s | validation %.1fs, %s samples%s",
                     record["epoch"], train_s, f"{self._samples:,}", f"{record['train_samples_per_s']:,.0f}",
                     self._val_s, f"{self._val_samples:,}", usage)

    def summary(self) -> dict:
        """``{"epochs": [...per-epoch records...], "train_samples_per_s": <over all epochs>}``."""
        train_s = sum(e["train_s"] for e in self.epochs)
        samples = sum(e["train_samples"] for e in self.epochs)
        return {"epochs": self.epochs, "train_samples_per_s": samples / train_s if train_s > 0 else None}
