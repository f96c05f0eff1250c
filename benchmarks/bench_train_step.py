"""Training-step throughput and peak memory: ATFT-GAT-FAN vs pytorch-forecasting's TFT.

Each measurement runs in a fresh subprocess (so peak RSS belongs to one configuration) and the parent
alternates ours and the peer under the SAME environment, so both see the same allocator setting
(``THP_MEM_ALLOC_ENABLE``) and the same machine load. Batch 1,024 samples, T=20, F=80, fp32, CPU.

What is timed: forward + backward + optimiser step on a batch already in memory (median over steps
after warm-up). Ours runs with its defaults (the variable selection's fused CPU kernels) and again with
``model.vsn_fused=false`` (the same function in tensor ops), so the table shows what the kernels add. Data loading is timed separately (``loader_s``): the peer's ``TimeSeriesDataSet``
loader vs our day-batch sampler gathering windows by index from the dense panel and building the day's graph
(after one other day's graph: the compiled top-k loads once per process, part of the start-up).

Beside each speed ratio: both models' parameter counts and FLOPs per sample (one training step under
``torch.utils.flop_counter.FlopCounterMode``, ``benchmarks/flops.py``), the achieved GFLOP/s and its share of
this machine's fp32 matmul peak, measured here with the same threads. Since samples/s = FLOP/s / FLOPs per
sample, a speed-up factors exactly into (peer FLOPs / our FLOPs per sample) x (our FLOP/s / peer FLOP/s):
a smaller model times better use of the machine.

    python benchmarks/bench_train_step.py            # full table (hidden 64 and 256)
    python benchmarks/bench_train_step.py --quick    # hidden 64 only, fewer steps
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from flops import flop_columns, matmul_peak_flops, step_flops

B, T, F = 1024, 20, 80


def _steps(step, n_warm: int, n_meas: int) -> float:
    for _ in range(n_warm):
        step()
    times = []
    for _ in range(n_meas):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_ours(hidden: int, n_meas: int, gat: bool, fused: bool = True) -> dict:
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    from atft.graph.day_graph import DayGraphBuilder
    from atft.model import build_model

    torch.manual_seed(0)
    cfg = OmegaConf.load(os.path.join(os.path.dirname(__file__), "..", "configs", "model", "atft_gat_fan.yaml"))
    cfg.hidden_size, cfg.gat.enabled, cfg.vsn_fused = hidden, gat, fused
    model = build_model(cfg, F, [1, 5, 10, 20])
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    rng = np.random.default_rng(0)
    # one trading day of B stocks: panel of 80 days, the graph of the last day (k=10 over 60 days)
    panel = torch.from_numpy(rng.standard_normal((80, B, F)).astype(np.float32))  # [D, N, F]
    returns = rng.standard_normal((80, B)).astype(np.float32)
    graphs = DayGraphBuilder(returns, np.ones((80, B), bool), window=60, k=10)
    stock_idx = np.arange(B)
    d = 79

    def gather():
        edge_index, edge_attr = graphs.graph(d, stock_idx)
        steps = torch.arange(d - T + 1, d + 1)  # [T]
        x = panel[steps][:, stock_idx].transpose(0, 1)  # [B, T, F] gathered by index
        return x, edge_index, edge_attr

    graphs.graph(d - 1, stock_idx)  # the process's first graph loads the compiled top-k: not a per-batch cost
    t0 = time.perf_counter()
    x, edge_index, edge_attr = gather()  # day d's graph is built here (not cached), as on a loader's first visit
    loader_s = time.perf_counter() - t0
    y = torch.randn(B, 4)

    def step():
        out = model(x, edge_index, edge_attr)
        loss = torch.nn.functional.huber_loss(out["predictions"], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    # counted on the tensor ops: the fused embedding kernels do the same multiply-adds out of the counter's sight
    model.variable_selection.fused = False
    flops = step_flops(step)
    model.variable_selection.fused = fused
    sec = _steps(step, 2, n_meas)
    name = "atft_gat_fan" + ("" if gat else " (no GAT)") + ("" if fused else " (VSN tensor ops)")
    return {"model": name, "hidden": hidden, "edges": int(edge_index.shape[1]),
            "step_s": sec, "samples_per_s": B / sec, "loader_s": loader_s, "flops_per_sample": flops / B,
            "params": sum(p.numel() for p in model.parameters())}


def run_peer(hidden: int, n_meas: int, micro: int) -> dict:
    import numpy as np
    import pandas as pd
    import torch
    from pytorch_forecasting import TemporalFusionTransformer, TimeSeriesDataSet
    from pytorch_forecasting.metrics import MAE

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n_groups, n_days = 128, 60
    feats = [f"f{i}" for i in range(F - 1)]  # + the target as the F-th encoder input
    df = pd.DataFrame({"g": np.repeat(np.arange(n_groups).astype(str), n_days), "t": np.tile(np.arange(n_days), n_groups)})
    df = pd.concat([df, pd.DataFrame(rng.standard_normal((len(df), F - 1)).astype("float32"), columns=feats)], axis=1)
    df["y"] = rng.standard_normal(len(df)).astype("float32")
    ds = TimeSeriesDataSet(df, time_idx="t", target="y", group_ids=["g"], max_encoder_length=T, max_prediction_length=1,
                           time_varying_unknown_reals=feats + ["y"], target_normalizer=None,
                           add_relative_time_idx=False, add_target_scales=False, add_encoder_length=False)
    loader = ds.to_dataloader(train=True, batch_size=micro, num_workers=0)
    it = iter(loader)
    t0 = time.perf_counter()
    batches = [next(it) for _ in range(B // micro)]
    loader_s = (time.perf_counter() - t0)
    model = TemporalFusionTransformer.from_dataset(ds, hidden_size=hidden, attention_head_size=4,
                                                   hidden_continuous_size=hidden, dropout=0.1, loss=MAE())
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        for x, (y, _) in batches:  # B // micro accumulation steps = one 1,024 batch
            out = model(x)
            loss = (out["prediction"].squeeze(-1) - y).abs().mean() * micro / B
            loss.backward()
        opt.step()

    flops = step_flops(step)  # also the warm-up step
    sec = _steps(step, 0, n_meas)
    return {"model": "pytorch-forecasting TFT", "hidden": hidden, "micro_batch": micro, "step_s": sec,
            "samples_per_s": B / sec, "loader_s": loader_s, "flops_per_sample": flops / B,
            "params": sum(p.numel() for p in model.parameters())}


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.which == "peak":
        res = {"fp32_matmul_peak_gflops": matmul_peak_flops("cpu", torch.float32) / 1e9}
    elif args.which == "ours":
        res = run_ours(args.hidden, args.steps, gat=not args.no_gat, fused=not args.ops_vsn)
    else:
        res = run_peer(args.hidden, args.steps, args.micro)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(res))


def measure(which: str, hidden: int, steps: int, threads: int, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--child", which, "--hidden", str(hidden), "--steps", str(steps),
           "--threads", str(threads), *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{which} hidden={hidden} failed:\n{out.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", dest="which", default=None)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="default: the CPUs this process may use")
    ap.add_argument("--micro", type=int, default=1024)
    ap.add_argument("--no-gat", action="store_true")
    ap.add_argument("--ops-vsn", action="store_true", help="ours with model.vsn_fused=false")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "train_step.json"))
    args = ap.parse_args()
    if not args.which:
        import atft  # noqa: F401 - sets OMP_WAIT_POLICY here, so the peer's child gets the same as ours
    if args.threads is None:
        from atft.training.cpu_share import available_cpus

        args.threads = available_cpus().threads
    if args.which:
        return child(args)
    rows = []
    peak = measure("peak", 0, 0, args.threads, [])["fp32_matmul_peak_gflops"]
    # the peer needs ~27 GB for one 1,024 batch at hidden 256: 4 x 256 accumulation (DESIGN.md)
    configs = [(64, 1024)] if args.quick else [(64, 1024), (256, 256)]
    for hidden, micro in configs:
        peer = measure("peer", hidden, 2 if args.quick else 3, args.threads, ["--micro", str(micro)])
        ours = measure("ours", hidden, args.steps, args.threads, [])
        ours_nogat = measure("ours", hidden, args.steps, args.threads, ["--no-gat"])
        ours_ops = measure("ours", hidden, args.steps, args.threads, ["--ops-vsn"])
        for r in (peer, ours, ours_nogat, ours_ops):
            r["speedup_vs_peer"] = r["samples_per_s"] / peer["samples_per_s"]
            r["memory_vs_peer"] = r["peak_rss_mb"] / peer["peak_rss_mb"]
            r.update(flop_columns(r["flops_per_sample"], r["samples_per_s"], peak * 1e9))
            r["flops_vs_peer"] = r["flops_per_sample"] / peer["flops_per_sample"]
            rows.append(r)
            print(json.dumps(r))
    env = {"threads": args.threads, "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "unset"),
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "unset"),
           "batch": B, "T": T, "F": F, "precision": "fp32", "device": "cpu", "fp32_matmul_peak_gflops": peak}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"env": env, "rows": rows}, fh, indent=1)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
