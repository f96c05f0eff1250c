"""A full training epoch against the training-step microbenchmark, and the epoch under a competing process.

Two questions, one dataset (``atft dataset build --source synthetic``), the same config throughout:

1. **No stalls**: samples/s over a whole training epoch of ``atft train`` (sampler, window gather, day graphs,
   degeneracy checks, logging: everything the loop does; from ``metrics.json`` ``info.timing``) as a share
   of the microbenchmark's samples/s: the same module's training step (forward, loss, backward, clipping,
   AdamW, the weight average's update when ``train.weight_averaging`` is on, as by default) on the same
   epoch's first batches, already gathered in memory, under the same ``train.trainer.malloc`` mode
   (``--malloc`` sets it for both). Goal: >= 90%.
2. **CPU share**: the epoch alone, then beside one busy process (a Python busy loop), with the threads
   chosen from the CPU share (``train.trainer.num_threads: null``) and the config's defaults, then with
   them adapted by the thread governor (``train.trainer.adaptive_threads=true``,
   ``atft.training.thread_governor``) and with 1 thread; and alone and beside it again with fixed threads
   and OpenMP's own wait policy (spin first, ``OMP_WAIT_POLICY=`` empty), the behaviour before atft set
   PASSIVE. On C cores, a process running n
   threads beside one busy process is due min(n, C x n/(n+1)) CPUs if the scheduler is fair, so the
   proportional expectation for its epoch time is ``alone x min(n_alone, C) / that``, relative to the epoch
   alone at the detected count (2 cores: 1.5x with 2 threads, 2x with 1); for a governed epoch also averaged
   over its steps at the count each ran with (``as_run``).

Each run is its own subprocess (its own threads and peak RSS). The machine load at start is recorded: on a
shared machine other users' work is a competitor too, and the figures are only as clean as that load. The
host's own speed drifts between runs, so each comparison is between neighbours: step, epoch, busy, epoch
again, step again; the no-stall share is the median of the (step, epoch) pairs and the default's busy run is
compared with the mean of the two epochs alone around it. When those two epochs (or the two pairs) disagree
by more than ``DRIFT`` (10%), the host moved under them: the benchmark runs epoch, step, busy, epoch once more
(a third pair, a fresh bracket), and a figure whose runs still disagree is reported as giving no verdict
(``summarise``). Then the governed and 1-thread busy runs and an epoch alone after them, and the
OpenMP-default pair. ``--one-pair`` (a long epoch) runs one epoch between two steps: its pairs are that
epoch with each of them; ``--append`` adds such a run to the earlier ones in ``--out`` (``append_runs``).

    python benchmarks/bench_epoch.py                      # 400 stocks x 500 days, hidden 32
    python benchmarks/bench_epoch.py --data P --hidden 16 # any dataset (e.g. the 5M-row one, under flock)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

# before torch (the children import it), as `atft train` does: OpenMP reads its wait policy when torch loads
import atft  # noqa: F401

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _overrides(args, run_dir: Path, threads: str) -> list[str]:
    return [f"data.path={args.data}", f"run_dir={run_dir}", f"run_name={run_dir.name}",
            f"train.log_dir={run_dir.parent / 'logs'}", "train.trainer.max_epochs=1",
            f"model.hidden_size={args.hidden}", f"train.batch.train_batch_size={args.batch}",
            "train.checkpoint.include_init=false", f"train.trainer.num_threads={threads}",
            *([f"train.trainer.adaptive_threads={str(args.adaptive).lower()}"] if args.adaptive is not None else []),
            *([f"train.trainer.malloc={args.malloc}"] if args.malloc else []), *args.set]


def step_split(step_s: list[float], fetch_s: list[float], check_every: int) -> dict:
    """Where the epoch's training time goes: its steps (batch start to batch end, the degeneracy guard's
    check included) at the median step without a check, the guard's check steps' extra time over that
    median, the first step's, the loader's fetches (batch end to the next batch start)."""
    checks = [t for i, t in enumerate(step_s) if i % check_every == 0 and i > 0]
    plain = statistics.median([t for i, t in enumerate(step_s) if i % check_every != 0] or step_s)
    return {"steps": len(step_s), "median_step_s": plain, "guard_extra_s": sum(t - plain for t in checks),
            "guard_checks": len(checks) + 1, "first_step_extra_s": step_s[0] - plain, "fetch_s": sum(fetch_s),
            "steps_at_median_s": plain * len(step_s)}


def child_epoch(args) -> dict:
    import lightning.pytorch as pl
    import torch

    from atft.config import load_config
    from atft.training.train import train

    class StepTimes(pl.Callback):
        """Each training step's time (after every other callback of the step, the guard's check included)
        and the time between steps (the loader's fetch)."""

        def __init__(self):
            self.step_s, self.fetch_s, self.threads, self.start, self.end = [], [], [], None, None

        def on_train_epoch_start(self, trainer, pl_module):
            self.end = time.perf_counter()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.start = time.perf_counter()
            self.fetch_s.append(self.start - self.end)
            self.threads.append(torch.get_num_threads())  # the thread governor's choice for this step

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.end = time.perf_counter()
            self.step_s.append(self.end - self.start)

    cfg = load_config(_overrides(args, Path(args.run_dir), args.threads))
    times = StepTimes()
    t0 = time.perf_counter()
    result = train(cfg, extra_callbacks=[times])
    epoch = result["info"]["timing"]["epochs"][0]
    return {"wall_s": time.perf_counter() - t0, "threads": dict(cfg.train.trainer.threads_used), **epoch,
            "val_scoring_s": result["info"]["timing"]["val_scoring_s"],
            "test_scoring_s": result["info"]["timing"]["test_scoring_s"],
            "split": step_split(times.step_s, times.fetch_s, int(cfg.train.degeneracy.check_every)),
            "steps_by_threads": {str(n): times.threads.count(n) for n in sorted(set(times.threads))}}


def child_micro(args) -> dict:
    """The training step alone on the epoch's first ``--micro-batches`` batches, gathered beforehand."""
    import torch

    from atft.config import load_config
    from atft.data.panel import load_panel
    from atft.training.allocator import heap_for_training
    from atft.training.averaging import EMAModel
    from atft.training.cpu_share import apply_cpu_share
    from atft.training.datamodule import PanelDataModule
    from atft.training.module import ATFTLightningModule
    from atft.training.progress import usage_since
    from atft.training.train import ema_decay

    cfg = load_config(_overrides(args, Path(args.run_dir), args.threads))
    share = apply_cpu_share(cfg)
    panel = load_panel(cfg.data.path, cfg.data, model_cfg=cfg.model)
    module = ATFTLightningModule(cfg, len(panel.feature_names), panel.horizons)
    dm = PanelDataModule(cfg, panel)
    dm.setup("fit")
    heap_for_training(cfg.train.trainer.get("malloc"))  # as train() does before fitting
    loader = iter(dm.loader("train", True, int(cfg.train.batch.train_batch_size), shard=False))
    batches = [dm.complete_batch(next(loader)) for _ in range(args.micro_batches)]
    del loader
    dm.teardown("fit")  # the prefetch thread (it had started the next batch) finishes before the steps are timed
    opt = torch.optim.AdamW(module.parameters(), lr=float(cfg.train.optimizer.lr))
    decay = ema_decay(cfg.train.weight_averaging, len(dm.train_dataloader()))
    average = EMAModel(module, decay) if decay is not None else None  # part of the step when configured

    def step(batch):
        terms = module.loss_terms(module(batch), batch)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), float(cfg.train.trainer.gradient_clip_val))
        opt.step()
        if average is not None:
            average.update_parameters(module)

    module.train()
    for batch in batches[:2]:
        step(batch)  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for batch in batches:
        step(batch)
    sec = time.perf_counter() - t0
    samples = sum(int(b["y"].shape[0]) for b in batches)
    return {"threads": share.threads, "steps": len(batches), "samples": samples, "seconds": sec,
            "samples_per_s": samples / sec,
            **{f"{k}_per_step": v / len(batches) for k, v in usage_since(before).items()}}


def _child(args, which: str, run_dir: Path, threads: str, competitor: bool, spin: bool = False,
           adaptive: bool | None = None) -> dict:
    """One child run; ``adaptive``: ``train.trainer.adaptive_threads`` for it (None: ``--adaptive-threads``,
    else the config's default)."""
    adaptive = args.adaptive if adaptive is None else adaptive
    shutil.rmtree(run_dir, ignore_errors=True)  # a previous benchmark's finished run would be refused
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("OMP_NUM_THREADS", None)  # the run chooses its threads (train.trainer.num_threads)
    env.pop("OMP_WAIT_POLICY", None)  # atft's default (PASSIVE) ...
    if spin:
        env["OMP_WAIT_POLICY"] = ""  # ... or OpenMP's own (spin, then sleep): the behaviour before atft set it
    cmd = [sys.executable, __file__, "--child", which, "--run-dir", str(run_dir), "--threads", threads,
           "--data", str(args.data), "--hidden", str(args.hidden), "--batch", str(args.batch),
           "--micro-batches", str(args.micro_batches), *(["--malloc", args.malloc] if args.malloc else []),
           *([] if adaptive is None else ["--adaptive-threads", str(adaptive).lower()]),
           *(f"--set={kv}" for kv in args.set)]
    # a busy loop that ends with its parent (an interrupted benchmark leaves no spinning process behind)
    spin = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass"
    busy = subprocess.Popen([sys.executable, "-c", spin]) if competitor else None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{which} threads={threads} failed:\n{out.stderr[-3000:]}")


def ensure_data(args) -> None:
    if args.data is None:
        args.data = str(Path(args.work) / f"synthetic_{args.stocks}x{args.days}.parquet")
    if not Path(args.data).is_file():
        subprocess.run([sys.executable, "-m", "atft.cli", "dataset", "build", "--source", "synthetic", "--stocks",
                        str(args.stocks), "--days", str(args.days), "--out", args.data], check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True)


def expected_slowdown(threads: int, cores: int, alone_threads: int) -> float:
    """Proportional epoch-time ratio beside one busy process (fair share), vs the epoch alone at ``alone_threads``."""
    cpus = threads if threads + 1 <= cores else cores * threads / (threads + 1)  # n threads + 1 busy, fair share
    return min(alone_threads, cores) / cpus


def as_run(steps_by_threads: dict[str, int], cores: int, alone_threads: int) -> float:
    """The proportional slowdown of an epoch whose steps ran at varying thread counts (the thread governor's):
    each step's fair-share slowdown at the count it ran with, averaged over the steps (the steps alone take
    the same time)."""
    steps = sum(steps_by_threads.values())
    return sum(c * expected_slowdown(int(n), cores, alone_threads) for n, c in steps_by_threads.items()) / steps


DRIFT = 0.10  # two epochs alone further apart than this: the host's own speed moved between them
PAIRS = (("alone", "micro"), ("alone_again", "micro_again"), ("alone_retry", "micro_retry"))
LAST = ("alone_retry2", "alone_retry", "alone_again")  # the last epoch alone of the default bracket (with or without the retry)
BUSY = {"busy": ("alone", "alone_again"), "busy_retry": ("alone_retry", "alone_retry2"),
        "busy_adaptive": (LAST, "alone_after"), "busy_1_thread": (LAST, "alone_after"),
        "busy_spin": ("alone_spin",)}  # each busy run and the epochs alone run around it (same wait policy)


def drift(a: float, b: float) -> float:
    """How far apart two timings of the same work are: the slower over the faster, minus 1."""
    return max(a, b) / min(a, b) - 1


def needs_retry(runs: dict[str, dict]) -> bool:
    """Whether the two epochs alone, or the two (epoch, step) pairs, disagree by more than ``DRIFT``."""
    alone, again = runs["alone"], runs["alone_again"]
    return (drift(alone["train_s"], again["train_s"]) > DRIFT
            or drift(alone["train_samples_per_s"] / runs["micro"]["samples_per_s"],
                     again["train_samples_per_s"] / runs["micro_again"]["samples_per_s"]) > DRIFT)


def summarise(runs: dict[str, dict], cores: int) -> dict:
    """The no-stall share and the CPU-share slowdowns from the runs made (``runs``' keys: ``PAIRS``, ``BUSY``).

    No stalls: each epoch with the step run next to it; the share is the median over the pairs (the mean of
    two). ``stable`` is whether the pairs agree within ``DRIFT`` (with a third pair, whether two of them do):
    when they do not, the host's speed, not the training loop, set the figure and it gives no verdict.
    CPU share: each busy run against the mean of the epochs alone around it, ``drift`` being how far those
    two disagree; the default's verdict (``busy``) comes from its bracket with the least drift (the first one,
    or the retry made when that drifted), ``stable`` when that drift is within ``DRIFT``."""
    pairs = [[epoch, micro, runs[epoch]["train_samples_per_s"] / runs[micro]["samples_per_s"]]
             for epoch, micro in PAIRS if epoch in runs and micro in runs]
    if "alone_again" not in runs and "micro_again" in runs:  # --one-pair: the one epoch with each step run
        pairs.append(["alone", "micro_again", runs["alone"]["train_samples_per_s"] / runs["micro_again"]["samples_per_s"]])
    shares = sorted(p[2] for p in pairs)
    stable = any(drift(a, b) <= DRIFT for i, a in enumerate(shares) for b in shares[i + 1:]) if len(shares) > 1 else True
    summary = {"epoch_vs_micro": statistics.median(shares), "epoch_vs_micro_pairs": [p[2] for p in pairs],
               "pairs": pairs, "stable": stable, "drift_limit": DRIFT,
               # the epoch's count includes its validation pass; the kernel mapping fresh memory shows here
               "minor_faults_per_step": {"epoch": runs["alone"].get("minor_faults", math.nan) / runs["alone"]["steps"],
                                         "micro": runs["micro"]["minor_faults_per_step"]}}
    for key, bases in BUSY.items():
        if key not in runs:
            continue
        bases = [next((c for c in b if c in runs), None) if isinstance(b, tuple) else b for b in bases]
        bases = [b for b in bases if b in runs]
        times = [runs[b]["train_s"] for b in bases]
        n, alone_n = runs[key]["threads"]["count"], runs[bases[0]]["threads"]["count"]
        summary[key] = {"vs": bases, "slowdown": runs[key]["train_s"] / statistics.mean(times),
                        "drift": drift(*times) if len(times) == 2 else None,
                        "proportional": expected_slowdown(n, cores, alone_n),
                        "proportional_as_run": as_run(runs[key]["steps_by_threads"], cores, alone_n)}
    tried = [k for k in ("busy", "busy_retry") if k in summary]
    if tried:
        best = min(tried, key=lambda k: summary[k]["drift"])
        summary["cpu_share"] = {"run": best, "stable": summary[best]["drift"] <= DRIFT,
                                "met": summary[best]["slowdown"] <= summary[best]["proportional"]}
    return summary


def run_sets(runs: dict[str, dict]) -> dict[int, dict[str, dict]]:
    """The runs of an appended results file by run: unsuffixed keys are run 1, ``<key>_<k>`` run k."""
    sets: dict[int, dict[str, dict]] = {}
    for key, value in runs.items():
        base, _, k = key.rpartition("_")
        index, name = (int(k), base) if base and k.isdigit() else (1, key)
        sets.setdefault(index, {})[name] = value
    return sets


def append_runs(old: dict, new: dict, cores: int) -> dict:
    """``new`` (one run of the benchmark) added to ``old`` as run k (keys and load figures suffixed ``_k``),
    with a summary over every run's pairs: the median of all of them, stable when each run is."""
    k = max(run_sets(old["runs"])) + 1
    runs = {**old["runs"], **{f"{key}_{k}": v for key, v in new["runs"].items()}}
    env = {**old["env"], **{f"{key}_{k}": new["env"][key] for key in ("load_at_start", "load_at_end", "data")}}
    each = [summarise(group, cores) for _, group in sorted(run_sets(runs).items())]
    pairs = [[f"{e}_{i}" if i > 1 else e, f"{m}_{i}" if i > 1 else m, v]
             for i, summ in enumerate(each, start=1) for e, m, v in summ["pairs"]]
    summary = {**each[-1], "epoch_vs_micro": statistics.median(p[2] for p in pairs),
               "epoch_vs_micro_mean": statistics.mean(p[2] for p in pairs),
               "epoch_vs_micro_pairs": [p[2] for p in pairs], "pairs": pairs,
               "stable": all(summ["stable"] for summ in each), "runs_pooled": len(each)}
    return {"env": env, "runs": runs, "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", default=None)
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--threads", default="null")
    ap.add_argument("--data", default=None, help="dataset parquet (default: built under --work)")
    ap.add_argument("--stocks", type=int, default=400)
    ap.add_argument("--days", type=int, default=500)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--micro-batches", type=int, default=12)
    ap.add_argument("--malloc", default=None, help="train.trainer.malloc for both sides (default: the config's)")
    ap.add_argument("--adaptive-threads", choices=("true", "false"), default=None,
                    help="train.trainer.adaptive_threads for the runs (default: the config's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every run (repeatable)")
    ap.add_argument("--work", default="/tmp/atft_bench_epoch")
    ap.add_argument("--no-competitor", action="store_true", help="only the no-stall comparison")
    ap.add_argument("--one-pair", action="store_true",
                    help="one epoch between two step microbenchmarks, no second epoch (a long epoch, e.g. the "
                         "5M-row panel)")
    ap.add_argument("--out", default=str(HERE / "results" / "epoch.json"))
    ap.add_argument("--append", action="store_true",
                    help="add this run to --out's earlier runs (keys suffixed _2, _3, ...) and summarise them all "
                         "(a long epoch repeated over a day, e.g. the 5M-row panel)")
    args = ap.parse_args()
    args.adaptive = None if args.adaptive_threads is None else args.adaptive_threads == "true"
    if args.child:
        res = child_epoch(args) if args.child == "epoch" else child_micro(args)
        print("RESULT " + json.dumps(res), flush=True)
        return
    from atft.io_utils import write_json
    from atft.training.cpu_share import available_cpus

    Path(args.work).mkdir(parents=True, exist_ok=True)
    ensure_data(args)
    share = available_cpus()
    env = {"data": args.data, "hidden": args.hidden, "batch": args.batch, "malloc": args.malloc or "config default",
           "cpu_share": share.threads,
           "cpu_share_source": share.source, "os_cpu_count": os.cpu_count(), "load_at_start": os.getloadavg()[0]}
    work = Path(args.work)

    def run(key: str, which: str, threads: str = "null", busy: bool = False, **kw) -> None:
        runs[key] = _child(args, which, work / key, threads, busy, **kw)
        print(f"{key}: " + json.dumps(runs[key]), flush=True)

    # this host's speed drifts by tens of percent over minutes, so every ratio is taken between neighbouring
    # runs: each epoch with the step run next to it, each busy run with the epochs alone just before and after
    runs: dict[str, dict] = {}
    run("micro", "micro")
    run("alone", "epoch")
    if args.one_pair:  # a long epoch: its pairs are that epoch with each step run
        run("micro_again", "micro")
    else:
        if not args.no_competitor:
            run("busy", "epoch", busy=True)
        run("alone_again", "epoch")
        run("micro_again", "micro")
        if needs_retry(runs):  # the host's speed moved between the runs: a third pair and a fresh bracket
            run("alone_retry", "epoch")
            run("micro_retry", "micro")
            if not args.no_competitor:
                run("busy_retry", "epoch", busy=True)
                run("alone_retry2", "epoch")
    if not args.no_competitor:
        run("busy_adaptive", "epoch", busy=True, adaptive=True)
        run("busy_1_thread", "epoch", "1", busy=True)
        run("alone_after", "epoch")
        run("alone_spin", "epoch", spin=True, adaptive=False)
        run("busy_spin", "epoch", busy=True, spin=True, adaptive=False)
    env["load_at_end"] = os.getloadavg()[0]
    result = {"env": env, "runs": runs, "summary": summarise(runs, share.threads)}
    if args.append and Path(args.out).is_file():
        result = append_runs(json.loads(Path(args.out).read_text()), result, share.threads)
    write_json(args.out, result)
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
