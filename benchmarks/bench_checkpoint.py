"""Activation checkpointing of the per-sample encoder (``model.checkpoint_samples``): memory and time of
one training step on a whole 4,000-stock day.

    python benchmarks/bench_checkpoint.py [--samples 4000] [--features 73] [--configs off,auto,500,1000] \
        [--out benchmarks/results/checkpoint.json]

Configurations: ``off`` (``checkpoint_samples=0``), ``auto`` (the default) and a number of samples per
chunk, each optionally with ``+ops`` (the variable selection in tensor ops, ``model.vsn_fused=false``). Each runs in a fresh subprocess (its peak RSS is its own): a
model at the defaults (hidden 64, T 20) on one day of ``--samples`` stocks with a random 10-neighbour
graph; forward + backward + Adam step, median time over steps after one warm-up, and the peak RSS above
the process after the warm-up's allocation-free start (the model and the batch). Time and memory are
reported as ratios to ``off`` in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def overrides(config: str) -> list[str]:
    """``off`` / ``auto`` / a chunk size, optionally ``+ops``: the variable selection in tensor ops
    (``model.vsn_fused=false``) instead of its fused kernels."""
    samples, _, path = config.partition("+")
    return [f"model.checkpoint_samples={0 if samples == 'off' else samples}",
            *(["model.vsn_fused=false"] if path == "ops" else [])]


def child(samples: int, features: int, config: str, steps: int) -> dict:
    import torch

    from atft.config import load_config
    from atft.model import build_model

    torch.manual_seed(0)
    cfg = load_config(["data.lookback=20", *overrides(config)])
    model = build_model(cfg.model, features, [1, 5, 10, 20])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(samples, 20, features)
    src = torch.randint(0, samples, (samples * 10,))
    edge_index = torch.cat([torch.stack([src, torch.arange(samples).repeat_interleave(10)]),
                            torch.arange(samples).repeat(2, 1)], 1)
    edge_attr = torch.rand(edge_index.shape[1], 3)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    times = []
    for _ in range(steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model(x, edge_index, edge_attr)["predictions"].square().mean().backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return {"config": config, "step_s": statistics.median(times[1:]), "peak_above_start_gb": peak - base,
            "threads": torch.get_num_threads()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--features", type=int, default=73)
    ap.add_argument("--configs", default="off,auto,500,1000")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print("RESULT " + json.dumps(child(args.samples, args.features, args.child, args.steps)))
        return
    rows = []
    for config in args.configs.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", config, "--samples", str(args.samples),
                              "--features", str(args.features), "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))[7:]))
    off = next(r for r in rows if r["config"] == "off")
    print(f"one training step on a {args.samples}-sample day, F={args.features}, T=20, hidden 64, "
          f"{off['threads']} threads")
    print(f"{'checkpointing':>18}{'step s':>9}{'x off':>7}{'peak GB':>9}{'x off':>7}")
    for r in rows:
        r["time_ratio"], r["memory_ratio"] = r["step_s"] / off["step_s"], r["peak_above_start_gb"] / off["peak_above_start_gb"]
        print(f"{r['config']:>18}{r['step_s']:>9.2f}{r['time_ratio']:>7.2f}{r['peak_above_start_gb']:>9.2f}"
              f"{r['memory_ratio']:>7.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"samples": args.samples, "features": args.features, "rows": rows},
                                             indent=2))


if __name__ == "__main__":
    main()
