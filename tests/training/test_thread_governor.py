"""The thread governor: fewer threads when another process holds the cores and that is faster, back up when
it is gone, no probe while the threads do not wait; driven by made-up step times, then inside a real training run."""

import logging
import os

import pytest
import torch
import yaml
from lightning.pytorch import Callback

from atft.training.thread_governor import ThreadGovernor, ThreadPolicy, run_queue_wait_s

SAMPLES = 1000


def machine(alone: dict[int, float], busy: dict[int, float], busy_steps=lambda step: True, waits=(2,),
            outlier_every: int = 0):
    """Seconds per step at each thread count, alone and beside a busy process (present where
    ``busy_steps(step)``); the threads in ``waits`` wait for a CPU half their time when it is present; every
    ``outlier_every``-th step takes 4x (a degeneracy-guard check)."""

    def cost(step: int, threads: int) -> tuple[float, float]:
        contended = busy_steps(step)
        seconds = (busy if contended else alone)[threads]
        if outlier_every and step % outlier_every == 0:
            seconds *= 4
        wait = 0.5 * seconds * threads if contended and threads in waits else 0.0
        return seconds, wait

    return cost


def run(policy: ThreadPolicy, cost, steps: int) -> list[int]:
    """The thread count of every step."""
    history = []
    for step in range(steps):
        threads = policy.threads
        history.append(threads)
        seconds, wait = cost(step, threads)
        policy.observe(seconds, SAMPLES, wait)
    return history


TWO_CORES = {"alone": {1: 1.7, 2: 1.0}, "busy": {1: 1.5, 2: 2.5}}  # measured shape: docs/performance.md


def test_threads_that_never_wait_are_never_probed():
    policy = ThreadPolicy(2)
    history = run(policy, machine(**TWO_CORES, busy_steps=lambda s: False, outlier_every=10), 3000)
    assert set(history) == {2} and policy.decisions == []


def test_beside_a_busy_process_it_keeps_one_thread_and_backs_off_its_probes_up():
    policy = ThreadPolicy(2)
    history = run(policy, machine(**TWO_CORES), 3000)
    first = policy.decisions[0]
    assert (first.base, first.tried, first.kept) == (2, 1, True) and first.step == policy.warmup + 2 * policy.window
    assert set(history[first.step:first.step + 32]) == {1}
    ups = policy.decisions[1:]
    assert ups and all(d.tried == 2 and not d.kept for d in ups)  # two threads stay slower: every probe fails
    gaps = [b.step - a.step for a, b in zip(ups, ups[1:])]
    assert gaps == sorted(gaps) and max(gaps) <= policy.backoff_max + 2 * policy.window and gaps[-1] > 500  # doubling, capped
    assert history.count(2) / len(history) < 0.03  # the probes' cost


def test_when_the_busy_process_ends_it_returns_to_the_ceiling():
    policy = ThreadPolicy(2)
    history = run(policy, machine(**TWO_CORES, busy_steps=lambda s: s < 400), 1400)
    assert history[300] == 1
    back = next(i for i in range(400, len(history)) if history[i] == 2 and history[i + 10] == 2)
    assert back - 400 <= policy.backoff_max + 2 * policy.window
    assert set(history[back:]) == {2} and policy.decisions[-1].kept and policy.decisions[-1].tried == 2


def test_fewer_threads_that_are_not_faster_are_given_back_with_backoff():
    # two busy processes: threads wait, but one thread is slower still
    policy = ThreadPolicy(2)
    history = run(policy, machine({1: 1.7, 2: 1.0}, {1: 2.6, 2: 2.5}), 3000)
    downs = policy.decisions
    assert downs and all(d.tried == 1 and not d.kept for d in downs)
    gaps = [b.step - a.step for a, b in zip(downs, downs[1:])]
    assert gaps == sorted(gaps) and gaps[-1] > 500
    assert history.count(2) / len(history) > 0.97


def test_an_outlier_step_in_a_window_does_not_decide():
    policy = ThreadPolicy(2)
    run(policy, machine(**TWO_CORES, outlier_every=5), 30)  # step 5: in the probe window
    assert policy.decisions[0].kept and policy.threads == 1


def test_more_than_two_threads_step_down_one_at_a_time_while_it_pays():
    # 4 CPUs, two busy processes: 2 threads are fastest; each count down to 2 waits, 1 does not help
    cost = machine({1: 3.4, 2: 1.8, 3: 1.3, 4: 1.0}, {1: 3.5, 2: 2.0, 3: 2.6, 4: 3.2}, waits=(3, 4))
    policy = ThreadPolicy(4)
    history = run(policy, cost, 200)
    assert [(d.base, d.tried, d.kept) for d in policy.decisions[:2]] == [(4, 3, True), (3, 2, True)]
    assert history[-1] == 2


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="ceiling=0"):
        ThreadPolicy(0)


def test_run_queue_wait_reads_this_process_or_none(tmp_path):
    wait = run_queue_wait_s()
    if os.path.exists("/proc/self/task"):
        assert wait is not None and wait >= 0
    assert run_queue_wait_s(str(tmp_path / "missing")) is None


class ContendedCpu:
    """A clock and a run-queue wait reader for a CPU shared with a busy process, from torch's thread count."""

    def __init__(self):
        self.now = self.waited = 0.0
        self.calls = 0

    def clock(self) -> float:
        self.calls += 1
        if self.calls % 2 == 0:  # a step's end: its duration at the current thread count
            self.now += TWO_CORES["busy"][min(2, torch.get_num_threads())] * 0.01
        return self.now

    def wait(self) -> float:
        if torch.get_num_threads() >= 2:
            self.waited += 0.01
        return self.waited


def test_governor_changes_torch_threads_in_a_training_run_and_restores_them(make_cfg, tmp_path):
    from atft.training.train import train

    cpu = ContendedCpu()
    governor = ThreadGovernor(2, clock=cpu.clock, wait=cpu.wait, window=2, warmup=1)
    seen = []

    class Watch(Callback):  # the thread count of every step
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    try:
        train(make_cfg("gov", **{"train.trainer.max_epochs": 2, "train.trainer.num_threads": 2,
                                 "train.trainer.adaptive_threads": False}), extra_callbacks=[governor, Watch()])
        after_fit = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert governor.active and seen[:3] == [2, 2, 2] and 1 in seen
    assert governor.policy.decisions[0].kept and governor.policy.decisions[0].tried == 1
    assert after_fit == 2  # restored for the scoring after the fit
    log = (tmp_path / "_logs" / "gov.log").read_text()
    assert "[CPU-SHARE] adaptive threads on: ceiling 2" in log and "-> keeping 1" in log
    used = yaml.safe_load((tmp_path / "gov" / "config.yaml").read_text())["train"]["trainer"]["threads_used"]
    assert used["adaptive"] is False  # the configured governor was off; this one came as an extra callback


def test_config_turns_the_governor_on_and_off(make_cfg):
    assert ThreadGovernor.from_config(make_cfg("x", **{"train.trainer.num_threads": 2}), 2) is None  # off by default
    cfg = make_cfg("x", **{"train.trainer.num_threads": 2, "train.trainer.adaptive_threads": True})
    assert isinstance(ThreadGovernor.from_config(cfg, 2), ThreadGovernor)
    assert ThreadGovernor.from_config(cfg, 1) is None
    assert ThreadGovernor.from_config(make_cfg("x", **{"train.trainer.adaptive_threads": False}), 2) is None
    assert ThreadGovernor.from_config(make_cfg("x", **{"train.trainer.adaptive_threads": True,
                                                       "train.trainer.deterministic": True}), 2) is None


def test_decision_lines_are_greppable(caplog):
    cpu = ContendedCpu()
    governor = ThreadGovernor(2, clock=cpu.clock, wait=cpu.wait, window=2, warmup=0)
    governor.active = True
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with caplog.at_level(logging.INFO, logger="atft.training"):
            for i in range(6):
                governor.on_train_batch_start(None, None, {"y": torch.zeros(10)}, i)
                governor.on_train_batch_end(None, None, None, {"y": torch.zeros(10)}, i)
    finally:
        torch.set_num_threads(before)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[CPU-SHARE] step")]
    assert lines and "1 thread(s)" in lines[0] and "-> keeping 1" in lines[0]
