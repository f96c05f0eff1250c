"""Intra-op threads from the CPUs this process may actually use, not the machine's core count.

``os.cpu_count()`` counts the machine's cores. A process pinned to fewer CPUs (``taskset``, a cpuset) or
given a CPU quota by its cgroup (a container's ``--cpus``, a systemd slice) that starts one OpenMP thread per
core gets its threads descheduled in turn; every parallel op waits for its slowest thread, so training slows
by more than its share of the CPU. The count here is the smallest of:

- the affinity mask (``os.sched_getaffinity``);
- the cgroup v2 quota (``cpu.max`` = ``"<quota> <period>"`` or ``"max <period>"``) of the process's cgroup and
  of every parent up to the mount point; or the cgroup v1 CFS quota (``cpu.cfs_quota_us`` /
  ``cpu.cfs_period_us``, ``-1`` = none). A fractional quota is rounded down (at least 1): a thread that
  the quota throttles holds up the others at every synchronisation.

Precedence: ``train.trainer.num_threads`` (explicit) > ``OMP_NUM_THREADS`` (the OpenMP standard switch) >
the detected share. The chosen count and its source are recorded in the config
(``train.trainer.threads_used``), so each run's ``config.yaml`` shows them; the knob itself stays as set, so a
run's ``config.yaml`` reused on another machine detects that machine's share again.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
log = logging.getLogger("atft.training")


def usage_since(before) -> dict:
    """The process's CPU seconds (user + system), system seconds and minor page faults since ``before``
    (a ``resource.getrusage(RUSAGE_SELF)`` result)."""
    import resource  # not on Windows, where callers leave the CPU figures out

    now = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": now.ru_utime + now.ru_stime - before.ru_utime - before.ru_stime,
            "system_s": now.ru_stime - before.ru_stime, "minor_faults": now.ru_minflt - before.ru_minflt}


@dataclass(frozen=True)
class CpuShare:
    """``threads``: intra-op threads to use; ``source``: where the figure came from (recorded in config.yaml)."""

    threads: int
    source: str


def affinity_cpus(affinity: set[int] | None = None) -> int:
    """CPUs in the affinity mask (``os.sched_getaffinity``; ``os.cpu_count()`` where unsupported)."""
    if affinity is None:
        try:
            affinity = os.sched_getaffinity(0)
        except (AttributeError, OSError):  # macOS / Windows
            return os.cpu_count() or 1
    return max(1, len(affinity))


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """(v2 path, v1 ``cpu`` controller path) of this process from ``/proc/self/cgroup``."""
    v2 = v1 = None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _ancestors(root: Path, path: str | None) -> list[Path]:
    """``root/path`` and each parent up to ``root`` (a container sees its own cgroup as the mount root)."""
    out = []
    rel = Path((path or "/").lstrip("/"))
    while True:
        out.append(root / rel)
        if rel == rel.parent:
            return out
        rel = rel.parent


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_v2_quota(root: Path, path: str | None) -> float | None:
    """Smallest ``cpu.max`` quota (in CPUs) on the way from the process's cgroup up to ``root``; None: no limit."""
    quotas = []
    for folder in _ancestors(root, path):
        text = _read(folder / "cpu.max")
        fields = text.split() if text else []
        if len(fields) == 2 and fields[0] != "max" and float(fields[1]) > 0:
            quotas.append(float(fields[0]) / float(fields[1]))
    return min(quotas) if quotas else None


def cgroup_v1_quota(root: Path, path: str | None) -> float | None:
    """Smallest CFS quota (in CPUs) of the ``cpu`` controller (mounted as ``cpu`` or ``cpu,cpuacct``)."""
    quotas = []
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        for folder in _ancestors(root / mount, path):
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            if quota and period and int(quota) > 0 and int(period) > 0:
                quotas.append(int(quota) / int(period))
    return min(quotas) if quotas else None


def available_cpus(affinity: set[int] | None = None, cgroup_root: Path = CGROUP_ROOT,
                   proc_cgroup: Path = PROC_CGROUP) -> CpuShare:
    """CPUs this process may use: min(affinity mask, cgroup quota rounded down, at least 1)."""
    n = affinity_cpus(affinity)
    share = CpuShare(n, f"affinity ({n} CPUs)")
    v2_path, v1_path = _cgroup_paths(proc_cgroup)
    for label, quota in (("cgroup v2 cpu.max", cgroup_v2_quota(Path(cgroup_root), v2_path)),
                         ("cgroup v1 cpu.cfs_quota_us", cgroup_v1_quota(Path(cgroup_root), v1_path))):
        if quota is not None and max(1, math.floor(quota)) < share.threads:
            share = CpuShare(max(1, math.floor(quota)), f"{label} ({quota:g} CPUs; affinity {n})")
    return share


def choose_threads(configured, environ: dict[str, str] | None = None, processes: int = 1,
                   detect=available_cpus) -> CpuShare:
    """The thread count for one of ``processes`` training processes sharing this machine's CPU share.

    Args:
        configured: ``train.trainer.num_threads`` (None: detect).
        environ: environment (default ``os.environ``); a valid ``OMP_NUM_THREADS`` beats detection.
        processes: local processes splitting the share (DDP on CPU); ignored for explicit counts.
    """
    if configured is not None:
        n = int(configured)
        if n < 1:
            raise ValueError(f"train.trainer.num_threads={configured!r}: expected a positive integer or null")
        return CpuShare(n, "config train.trainer.num_threads")
    env = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return CpuShare(int(env), "OMP_NUM_THREADS")
    share = detect()
    if processes > 1:
        return CpuShare(max(1, share.threads // processes), f"{share.source} / {processes} processes")
    return share


def _local_processes(trainer_cfg) -> int:
    """Training processes on this machine: ``devices`` for DDP on CPU, else 1."""
    on_cpu = str(trainer_cfg.get("accelerator", "auto")) == "cpu"
    devices = trainer_cfg.get("devices", 1)
    if on_cpu and str(trainer_cfg.get("strategy", "auto")).startswith("ddp") and isinstance(devices, int):
        return max(1, devices)
    return 1


def apply_cpu_share(cfg) -> CpuShare:
    """Set torch's intra-op threads from ``cfg.train.trainer.num_threads`` or the detected CPU share, and
    record the choice in ``cfg.train.trainer.threads_used`` (``{"count": n, "source": "...", "omp_wait_policy":
    ...}``; the wait policy is set in ``atft/__init__.py``, before torch starts OpenMP). Also fixes glibc's
    malloc settings (``train.trainer.malloc``, ``atft.training.allocator``), recorded in
    ``cfg.train.trainer.allocator_used``."""
    import torch

    from atft import OMP_WAIT_POLICY_SET_LATE, omp_wait_policy
    from atft.training.allocator import tune_malloc

    t = cfg.train.trainer
    share = choose_threads(t.get("num_threads"), processes=_local_processes(t))
    torch.set_num_threads(share.threads)
    t.threads_used = {"count": share.threads, "source": share.source, "omp_wait_policy": omp_wait_policy()}
    if OMP_WAIT_POLICY_SET_LATE and share.threads > 1:
        log.warning("torch was imported before atft, so OpenMP runs with its default wait policy (threads spin "
                    "at every op's end), not PASSIVE: beside other processes training slows by more than its "
                    "share of the cores; import atft first or set OMP_WAIT_POLICY=PASSIVE in the environment")
    t.allocator_used = tune_malloc(t.get("malloc", None))
    return share
