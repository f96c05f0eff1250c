"""The progress log: lines every N steps or seconds, ETA, validation kept out of the training rate."""

import logging
import re
from types import SimpleNamespace

import torch

from atft.training.progress import ProgressLog, format_duration, progress_line


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _trainer(epoch=0, max_epochs=2, batches=10):
    return SimpleNamespace(current_epoch=epoch, max_epochs=max_epochs, num_training_batches=batches, global_step=0,
                           is_global_zero=True, sanity_checking=False)


def _batch(n):
    return {"y": torch.zeros(n, 4)}


def test_format_duration():
    assert [format_duration(s) for s in (42, 481, 4440)] == ["42s", "8m01s", "1h14m"]


def test_progress_line_rate_and_eta():
    line = progress_line(1, 2, 5, 10, 5, 5000, 10.0, None, 1)
    assert "step 5/10" in line and "500 samples/s" in line and "epoch ETA 10s" in line
    assert "run ETA" not in line
    assert "run ETA 1m10s" in progress_line(1, 2, 5, 10, 5, 5000, 10.0, 60.0, 1)


def _train_steps(cb, trainer, clock, steps: int, seconds: float, samples: int) -> None:
    """Start an epoch and run ``steps`` training batches of ``samples`` each, ``seconds`` apart."""
    cb.on_train_epoch_start(trainer, None)
    for i in range(steps):
        clock.now += seconds
        cb.on_train_batch_end(trainer, None, None, _batch(samples), i)


def _progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]


def test_lines_every_n_steps_and_epoch_timing_excludes_validation(caplog):
    clock, trainer = FakeClock(), _trainer()
    cb = ProgressLog(every_steps=4, every_s=0, clock=clock)
    with caplog.at_level(logging.INFO, logger="atft.training"):
        _train_steps(cb, trainer, clock, 10, 1.0, 100)
        cb.on_validation_epoch_start(trainer, None)
        clock.now += 5.0
        cb.on_validation_batch_end(trainer, None, None, _batch(300), 0)
        cb.on_validation_epoch_end(trainer, None)
        cb.on_train_epoch_end(trainer, None)
    lines = _progress_lines(caplog)
    assert len(lines) == 2 and "step 4/10" in lines[0] and "step 8/10" in lines[1]
    assert "100 samples/s" in lines[0] and "epoch ETA 6s" in lines[0]
    epoch = cb.summary()["epochs"][0]
    assert epoch["train_s"] == 10.0 and epoch["train_samples"] == 1000 and epoch["train_samples_per_s"] == 100.0
    assert epoch["val_s"] == 5.0 and epoch["val_samples"] == 300
    assert any(r.getMessage().startswith("epoch 1 timing") for r in caplog.records)


def test_lines_by_time_when_steps_are_slow(caplog):
    clock, trainer = FakeClock(), _trainer(batches=100)
    cb = ProgressLog(every_steps=0, every_s=30, clock=clock)
    with caplog.at_level(logging.INFO, logger="atft.training"):
        _train_steps(cb, trainer, clock, 5, 20.0, 10)
    lines = _progress_lines(caplog)
    assert [line.split(" step ")[1].split(" ")[0] for line in lines] == ["2/100", "4/100"]


def test_run_logs_progress_and_records_threads_and_scoring_times(make_cfg, tmp_path):
    import json
    import platform

    import yaml

    from atft.training.train import train

    before = torch.get_num_threads()
    try:
        train(make_cfg("prog", **{"train.trainer.max_epochs": 1, "train.progress.every_steps": 1,
                                  "train.trainer.num_threads": 1}))
    finally:
        torch.set_num_threads(before)
    run = tmp_path / "prog"
    used = yaml.safe_load((run / "config.yaml").read_text())["train"]["trainer"]["threads_used"]
    assert used["count"] == 1 and used["source"] == "config train.trainer.num_threads"
    assert used["omp_wait_policy"] == "PASSIVE" and used["adaptive"] is False  # one thread: nothing to adapt
    alloc = yaml.safe_load((run / "config.yaml").read_text())["train"]["trainer"]["allocator_used"]
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert alloc == ({"mode": "threshold", "applied": True, "mmap_threshold_mb": 32, "trim_threshold_mb": 64}
                     if glibc else {"mode": "threshold", "applied": False, "why": "not glibc"})
    log = (tmp_path / "_logs" / "prog.log").read_text()
    assert "progress: epoch 1/1 step 1/" in log and "samples/s" in log and "epoch ETA" in log
    assert "epoch 1 timing: train" in log and "test scoring:" in log and "intra-op threads: 1" in log
    timing = json.loads((run / "metrics.json").read_text())["info"]["timing"]
    assert timing["val_scoring_s"] > 0 and timing["test_scoring_s"] > 0
    assert len(timing["epochs"]) == 1 and timing["epochs"][0]["train_samples"] > 0
    assert timing["epochs"][0]["val_samples"] > 0 and timing["train_samples_per_s"] > 0
    epoch = timing["epochs"][0]  # the process's CPU and page faults over the epoch, in the record and the log
    assert 0 <= epoch["system_s"] <= epoch["cpu_s"] and epoch["cpu_s"] > 0 and epoch["minor_faults"] >= 0
    assert re.search(r"epoch 1 timing: .* \| CPU [\d.]+s \(system [\d.]+s\), [\d,]+ page faults", log)
