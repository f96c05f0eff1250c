"""Intra-op threads that follow the CPU share the process actually gets while training on the CPU.

``cpu_share`` starts one thread per CPU the process may use. When another process keeps some of those CPUs
busy, every parallel op waits for its slowest thread, and a thread that the scheduler has set aside for the
other process's time slice holds up the rest. (The measurement that motivated this, 2 threads 2.3-2.7x the
epoch alone beside one busy process against 1.35-1.6x with 1 thread, was taken with OpenMP's spinning wait
policy in effect unknowingly; with the passive policy 2 fixed threads took 1.51-1.52x: docs/performance.md.)

The governor measures instead of guessing. After every ``window`` training steps it reads how long the
process's threads were runnable but waiting for a CPU (the run-queue wait of ``/proc/self/task/*/schedstat``,
Linux) and the steps' median seconds per sample:

- **down**: when the threads waited for more than ``wait_share`` of the window's thread-seconds (another
  process holds the cores), it runs the next window with one thread fewer and keeps that count only if its
  median step per sample is at least ``margin`` faster; otherwise it goes back and waits ``backoff`` steps
  (doubling on every failed probe, at most ``backoff_max``) before probing down again;
- **up**: below the ceiling, ``backoff`` steps after the change and then after gaps of ``backoff``,
  2 x ``backoff``, ... (at most ``backoff_max``) while the probes fail, it runs a window with one thread
  more and keeps it if that is ``margin`` faster (the other process may have ended; a thread that waits for
  nothing cannot show it in its own wait).

Off by default (``train.trainer.adaptive_threads: false``): with OpenMP's passive wait policy in effect, a
fixed thread count did better beside a busy process on 2 cores (1.51x / 1.52x the epoch alone against 1.64x /
1.61x governed; docs/performance.md). Alone, the threads rarely wait and the governor does not probe.
The ceiling is the count ``cpu_share`` chose (config, ``OMP_NUM_THREADS`` or the detected share). The
decision logic (``ThreadPolicy``) is separate from the clock and the ``/proc`` reader, so tests drive it with
made-up step times. Decisions are logged as ``[CPU-SHARE]`` lines. Off (``train.trainer.adaptive_threads:
false``) with ``train.trainer.deterministic`` (the fused kernels' gradient sums are reproducible at a given
thread count only), off the CPU, with a single thread, and where ``schedstat`` cannot be read.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import dataclass, field

import lightning.pytorch as pl
import torch

log = logging.getLogger("atft.training")
TASKS = "/proc/self/task"


def run_queue_wait_s(tasks: str = TASKS) -> float | None:
    """Seconds this process's threads have spent runnable but waiting for a CPU, summed over the live threads
    (``schedstat``'s second field, nanoseconds); None where the kernel does not provide it. Threads that
    ended between two reads drop out of the sum, so a difference can be negative: callers clip it at 0."""
    total = 0
    try:
        names = os.listdir(tasks)
    except OSError:
        return None
    for name in names:
        try:
            with open(f"{tasks}/{name}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended, or no schedstat
    return total / 1e9


@dataclass
class Decision:
    """One probe's outcome: at ``step``, ``tried`` threads gave ``per_sample_s`` against ``base_s`` at ``base``."""

    step: int
    base: int
    tried: int
    base_s: float
    per_sample_s: float
    kept: bool
    wait_share: float

    def line(self) -> str:
        verdict = f"keeping {self.tried}" if self.kept else f"back to {self.base}"
        return (f"[CPU-SHARE] step {self.step}: {self.tried} thread(s) {self.per_sample_s * 1e6:.1f} us/sample vs "
                f"{self.base} thread(s) {self.base_s * 1e6:.1f} us/sample (run-queue wait {self.wait_share:.0%} "
                f"of thread time before the probe) -> {verdict}")


@dataclass
class ThreadPolicy:
    """The governor's decisions from per-step measurements (no clock, no ``/proc``: see the module docstring).

    Args:
        ceiling: the most threads to use (``cpu_share``'s count). window: steps per measurement (3: the
            median ignores one outlier, e.g. a degeneracy-guard check step, which comes every 10; short, since
            every step of a probe that fails is a slow one). warmup: first steps not measured (kernel caches,
            allocator). wait_share: run-queue wait, as a share of the window's
            thread-seconds, that starts a probe down. margin: how much faster per sample a probed count must
            be to be kept. backoff / backoff_max: steps before probing again after a failed probe (doubling).
    """

    ceiling: int
    window: int = 3
    warmup: int = 1
    wait_share: float = 0.10
    margin: float = 0.05
    backoff: int = 32
    backoff_max: int = 512
    threads: int = field(init=False)
    decisions: list[Decision] = field(init=False, default_factory=list)

    def __post_init__(self):
        if self.ceiling < 1 or self.window < 1:
            raise ValueError(f"thread governor: ceiling={self.ceiling}, window={self.window}: expected >= 1")
        self.threads = self.ceiling
        self._step = 0
        self._times: list[float] = []
        self._wait = self._thread_s = 0.0
        self._probe: tuple[int, float, float] | None = None  # (base threads, base per-sample s, wait share)
        self._down_after, self._up_after = 0, self.backoff
        self._down_backoff = self._up_backoff = self.backoff // 2  # doubled before each use: backoff, 2 x backoff, ...

    def observe(self, seconds: float, samples: int, wait_s: float) -> int:
        """One training step: its wall ``seconds``, its ``samples`` and its run-queue wait; returns the thread
        count for the next step."""
        self._step += 1
        if self._step <= self.warmup or samples <= 0 or seconds <= 0:
            return self.threads
        self._times.append(seconds / samples)
        self._wait += max(0.0, wait_s)
        self._thread_s += seconds * self.threads
        if len(self._times) < self.window:
            return self.threads
        median, share = statistics.median(self._times), self._wait / self._thread_s
        self._times, self._wait, self._thread_s = [], 0.0, 0.0
        if self._probe is not None:
            self._finish_probe(median)
        elif share > self.wait_share and self.threads > 1 and self._step >= self._down_after:
            self._start_probe(self.threads - 1, median, share)
        elif self.threads < self.ceiling and self._step >= self._up_after:
            self._start_probe(self.threads + 1, median, share)
        return self.threads

    def _start_probe(self, threads: int, base_s: float, share: float) -> None:
        self._probe = (self.threads, base_s, share)
        self.threads = threads

    def _finish_probe(self, median: float) -> None:
        base, base_s, share = self._probe
        self._probe = None
        kept = median < base_s * (1.0 - self.margin)
        self.decisions.append(Decision(self._step, base, self.threads, base_s, median, kept, share))
        down = self.threads < base
        if kept:
            self._down_backoff = self._up_backoff = self.backoff // 2  # a new situation: probe again soon
            self._up_after = self._step + self.backoff
        else:
            self.threads = base
            if down:
                self._down_backoff = min(2 * self._down_backoff, self.backoff_max)
                self._down_after = self._step + self._down_backoff
            else:
                self._up_backoff = min(2 * self._up_backoff, self.backoff_max)
                self._up_after = self._step + self._up_backoff


class ThreadGovernor(pl.Callback):
    """Lightning callback applying ``ThreadPolicy`` to ``torch.set_num_threads`` during CPU training; restores
    the ceiling when the fit ends (validation and test scoring after it start from the full count).

    Args:
        ceiling: ``cpu_share``'s thread count. policy: keyword arguments of ``ThreadPolicy``. clock / wait:
            the step timer and the run-queue wait reader (tests replace them).
    """

    def __init__(self, ceiling: int, clock=time.perf_counter, wait=run_queue_wait_s, **policy):
        self.policy = ThreadPolicy(ceiling, **policy)
        self.clock, self.wait = clock, wait
        self.active = False
        self._start = self._wait_start = 0.0

    @classmethod
    def from_config(cls, cfg, ceiling: int) -> ThreadGovernor | None:
        """The governor for ``train.trainer`` (None when off: ``adaptive_threads`` false, ``deterministic``,
        or a single thread)."""
        t = cfg.train.trainer
        if not t.get("adaptive_threads", False) or t.get("deterministic") or ceiling <= 1:
            return None
        return cls(ceiling)

    def on_fit_start(self, trainer, pl_module) -> None:
        self.active = trainer.strategy.root_device.type == "cpu" and self.wait() is not None
        if self.active:
            log.info("[CPU-SHARE] adaptive threads on: ceiling %d, probes when the threads wait for a CPU "
                     "more than %.0f%% of the time", self.policy.ceiling, 100 * self.policy.wait_share)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.active:
            self._start, self._wait_start = self.clock(), self.wait() or 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not self.active:
            return
        seconds = self.clock() - self._start
        waited = (self.wait() or 0.0) - self._wait_start
        before, n = self.policy.threads, len(self.policy.decisions)
        threads = self.policy.observe(seconds, int(batch["y"].shape[0]), waited)
        for decision in self.policy.decisions[n:]:
            log.info(decision.line())
        if threads != before:
            torch.set_num_threads(threads)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.active:
            torch.set_num_threads(self.policy.ceiling)
            self.policy.threads = self.policy.ceiling
