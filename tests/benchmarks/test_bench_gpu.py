"""The GPU benchmark's ``--dry`` pass: the same code as ``make bench-gpu`` on the CPU at toy size."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_gpu_dry_pass_writes_the_results_file(tmp_path):
    out = tmp_path / "gpu.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--dry", "--out", str(out),
                           "--work", str(tmp_path / "work")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = out.read_text()
    assert "No GPU was available" in text and "Goal: ≥ 100,000 samples/s at hidden 256: not applicable" in text
    result = json.loads(out.with_suffix(".json").read_text())
    assert [r["hidden"] for r in result["steps"]] == [64, 256]
    for row in result["steps"]:
        assert row["samples_per_s"] > 0 and row["flops_per_sample"] > 0 and row["params"] > 0
    assert result["steps"][1]["flops_per_sample"] > result["steps"][0]["flops_per_sample"]
    assert result["env"]["peak_flops"] > 0
    epoch = result["epoch"]
    assert epoch["epoch"]["returncode"] == 0
    assert "integrated_ml_training_pipeline.py" in epoch["epoch"]["command"]
    assert "train.batch.train_batch_size=2048" in epoch["epoch"]["command"]
    timing = epoch["timing"]
    assert timing["epochs"][0]["train_samples_per_s"] > 0 and timing["test_scoring_s"] > 0
    assert "| training samples/s |" in text
