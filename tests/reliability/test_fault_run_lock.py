"""Row 3: one writer per run folder (an advisory lock for the run's life; a finished run is not mixed into)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fault_helpers import one_error_line, overrides

from atft.errors import InputError
from atft.run_lock import LOCK_NAME, RunLock

SRC = Path(__file__).resolve().parents[2] / "src"


def _holder(run_dir: Path) -> subprocess.Popen:
    """Another process that takes the run folder's lock and keeps it until killed."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(SRC)!r})
        from atft.run_lock import RunLock
        RunLock({str(run_dir)!r}, "train").acquire()
        print("locked", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_while_the_first_holds_the_folder(dataset, tmp_path, cli):
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        code, err = cli("train", *overrides(dataset, run))
        line = one_error_line(err)
        assert code == 2 and "is in use" in line and f"pid {holder.pid}" in line
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_process_is_detected_as_stale(dataset, tmp_path, cli):
    run = tmp_path / "run"
    holder = _holder(run)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    lock = RunLock(run, "train").acquire()  # the kernel dropped the dead process's flock
    try:
        assert lock.stale.get("pid") == holder.pid
    finally:
        lock.release()
    holder = _holder(run)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    code, _ = cli("train", *overrides(dataset, run))
    assert code == 0 and (run / "metrics.json").is_file()
    log = (tmp_path / "_logs" / "run.log").read_text()
    assert f"stale lock of pid {holder.pid}" in log


def test_lock_is_released_on_any_exit(dataset, tmp_path, cli):
    run = tmp_path / "run"
    code, _ = cli("train", *overrides(dataset, run), "data.lookback=500")  # fails after the lock is taken
    assert code == 2
    RunLock(run, "train").acquire().release()  # free again
    code, _ = cli("train", *overrides(dataset, run))
    assert code == 0
    RunLock(run, "train").acquire().release()


def test_finished_run_folder_needs_a_new_folder_or_resume(dataset, tmp_path, cli):
    run = tmp_path / "run"
    assert cli("train", *overrides(dataset, run))[0] == 0
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    log = tmp_path / "_logs" / "run.log"
    log_size = log.stat().st_size
    time.sleep(0.01)
    code, err = cli("train", *overrides(dataset, run))
    line = one_error_line(err)
    assert code == 2 and "finished run" in line and "new --run-dir" in line and "--resume-from" in line
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
    assert log.stat().st_size == log_size  # nothing appended to the finished run's log either
    code, _ = cli("train", "--resume-from", run / "checkpoints" / "last.ckpt",
                  *overrides(dataset, run, **{"train.trainer.max_epochs": 2}))
    assert code == 0


def test_lock_helper_refuses_in_process_too(tmp_path):
    with RunLock(tmp_path / "run", "tune"):
        with pytest.raises(InputError, match="in use by another `atft tune`"):
            RunLock(tmp_path / "run", "train").acquire()
