"""Row 6: a 2-process DDP run (gloo, CPU) whose worker is killed exits non-zero with one line, without
hanging, and ``--resume-from last.ckpt`` finishes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_helpers import overrides

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 6


def _ddp_cmd(dataset: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "atft.cli", "train", *extra, *overrides(dataset, run), "train.trainer.devices=2",
            "train.trainer.strategy=ddp", f"train.trainer.max_epochs={EPOCHS}", "train.trainer.ddp_timeout_s=90",
            "train.early_stopping.patience=0"]  # every epoch runs, so the resumed run must reach EPOCHS


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ATFT_RUN_DIR", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")})
    return env


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow
def test_killed_ddp_worker_ends_the_run_with_one_line_and_resume_finishes(dataset, tmp_path):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(_ddp_cmd(dataset, run), cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        while not last.exists():  # the first epoch is done and saved
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        worker = _children(proc.pid)
        assert len(worker) == 1  # Lightning's launcher: this process is rank 0, its one child rank 1
        os.kill(worker[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=240)  # bounded: the gloo peer sees the closed socket at once
    finally:
        proc.kill()
    errors = [line for line in err.splitlines() if line.startswith("atft: error:")]
    assert proc.returncode == 1, err[-3000:]
    assert len(errors) == 1 and "distributed worker was lost" in errors[0] and "--resume-from" in errors[0]
    assert "Traceback" not in err
    assert not (run / "metrics.json").exists()
    done = len((run / "metrics.jsonl").read_text().splitlines())
    assert 1 <= done < EPOCHS

    resumed = subprocess.run(_ddp_cmd(dataset, run, "--resume-from", str(last)), cwd=tmp_path, env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["epoch"] == EPOCHS and (run / "metrics.json").is_file()
