"""Intra-op threads from the CPU share: affinity mask and cgroup v1/v2 quotas on fake files."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from atft.training.cpu_share import CpuShare, apply_cpu_share, available_cpus, choose_threads


def _proc(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proc_cgroup"
    path.write_text(text)
    return path


def _write(path: Path, text: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, value in (t.split("=") for t in text.split(";")):
        (path / name).write_text(value + "\n")


def test_affinity_alone_when_no_cgroup_limit(tmp_path):
    _write(tmp_path / "cg", "cpu.max=max 100000")
    share = available_cpus({0, 1, 2}, tmp_path / "cg", _proc(tmp_path, "0::/\n"))
    assert share == CpuShare(3, "affinity (3 CPUs)")


def test_cgroup_v2_quota_caps_the_affinity(tmp_path):
    root = tmp_path / "cg"
    _write(root / "job", "cpu.max=200000 100000")  # 2 CPUs on a 16-CPU machine
    share = available_cpus(set(range(16)), root, _proc(tmp_path, "0::/job\n"))
    assert share.threads == 2
    assert "cgroup v2" in share.source


def test_cgroup_v2_parent_quota_counts_and_fractions_round_down(tmp_path):
    root = tmp_path / "cg"
    _write(root / "slice", "cpu.max=250000 100000")  # 2.5 CPUs on the parent
    _write(root / "slice" / "job", "cpu.max=max 100000")
    assert available_cpus(set(range(8)), root, _proc(tmp_path, "0::/slice/job\n")).threads == 2
    _write(root / "slice", "cpu.max=50000 100000")  # half a CPU: still one thread
    assert available_cpus(set(range(8)), root, _proc(tmp_path, "0::/slice/job\n")).threads == 1


def test_container_sees_its_cgroup_at_the_mount_root(tmp_path):
    root = tmp_path / "cg"
    _write(root, "cpu.max=300000 100000")  # the listed path does not exist inside the container
    assert available_cpus(set(range(8)), root, _proc(tmp_path, "0::/docker/abc\n")).threads == 3


def test_cgroup_v1_cfs_quota(tmp_path):
    root = tmp_path / "cg"
    _write(root / "cpu,cpuacct" / "job", "cpu.cfs_quota_us=150000;cpu.cfs_period_us=100000")
    share = available_cpus(set(range(4)), root, _proc(tmp_path, "4:memory:/x\n2:cpu,cpuacct:/job\n"))
    assert share.threads == 1 and "cgroup v1" in share.source
    _write(root / "cpu,cpuacct" / "job", "cpu.cfs_quota_us=-1;cpu.cfs_period_us=100000")
    assert available_cpus(set(range(4)), root, _proc(tmp_path, "2:cpu,cpuacct:/job\n")).threads == 4


def test_a_smaller_affinity_mask_beats_a_larger_quota(tmp_path):
    root = tmp_path / "cg"
    _write(root, "cpu.max=800000 100000")
    assert available_cpus({5}, root, _proc(tmp_path, "0::/\n")) == CpuShare(1, "affinity (1 CPUs)")


def test_precedence_config_then_omp_then_detection():
    detect = lambda: CpuShare(6, "affinity (6 CPUs)")  # noqa: E731
    assert choose_threads(3, {"OMP_NUM_THREADS": "1"}, detect=detect) == CpuShare(3, "config train.trainer.num_threads")
    assert choose_threads(None, {"OMP_NUM_THREADS": "2"}, detect=detect) == CpuShare(2, "OMP_NUM_THREADS")
    assert choose_threads(None, {}, detect=detect).threads == 6
    assert choose_threads(None, {}, processes=4, detect=detect).threads == 1  # DDP on CPU splits the share
    with pytest.raises(ValueError, match="num_threads"):
        choose_threads(0, {}, detect=detect)


def test_apply_sets_torch_threads_and_records_them_in_the_config():
    cfg = OmegaConf.create({"train": {"trainer": {"num_threads": 1, "threads_used": None, "accelerator": "cpu"}}})
    before = torch.get_num_threads()
    try:
        apply_cpu_share(cfg)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    used = cfg.train.trainer.threads_used
    assert (used.count, used.source) == (1, "config train.trainer.num_threads") and used.omp_wait_policy
    assert cfg.train.trainer.num_threads == 1  # the knob is left as set


def test_atft_sets_a_passive_openmp_wait_policy_unless_one_is_given():
    import os
    import subprocess
    import sys

    code = "import atft, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"


def test_the_recorded_wait_policy_is_the_one_openmp_read_when_torch_loaded():
    """OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads: a program importing torch before atft keeps
    OpenMP's spinning default whatever atft sets afterwards, and its record and log must say so."""
    import os
    import subprocess
    import sys

    code = ("import logging, sys; logging.basicConfig(stream=sys.stdout, format='%(levelname)s %(message)s')\n"
            "{first}\nfrom omegaconf import OmegaConf\nfrom atft.training.cpu_share import apply_cpu_share\n"
            "cfg = OmegaConf.create({{'train': {{'trainer': {{'num_threads': 2, 'threads_used': None}}}}}})\n"
            "apply_cpu_share(cfg)\nprint('POLICY', cfg.train.trainer.threads_used.omp_wait_policy)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}

    def run(first: str, environ: dict) -> str:
        return subprocess.run([sys.executable, "-c", code.format(first=first)], env=environ, capture_output=True,
                              text=True, check=True).stdout

    late = run("import torch, atft", env)
    assert "POLICY OpenMP default (torch was imported before atft)" in late
    assert "WARNING torch was imported before atft" in late and "OMP_WAIT_POLICY=PASSIVE" in late
    first = run("import atft, torch", env)
    assert "POLICY PASSIVE" in first and "WARNING" not in first
    given = run("import torch, atft", {**env, "OMP_WAIT_POLICY": "PASSIVE"})  # set before torch loaded: in effect
    assert "POLICY PASSIVE" in given and "WARNING" not in given
