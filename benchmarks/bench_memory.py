"""Training memory and start-up time of ``atft train`` against the dense float32 panel.

    python benchmarks/bench_memory.py --out results/memory.json [--quick]
    python benchmarks/bench_memory.py --baseline-src /path/to/old/src ...   # also measure older code

Each measurement is a fresh process (``--probe``) running ``atft train`` for a few optimiser steps, so its
peak RSS is clean: the process's ``ru_maxrss`` at the last step (setup, panel load, ridge warm start,
and the steps). Start-up is the wall time from the process's start to its first
training step. Datasets: (a) the 5M-row synthetic market (``atft dataset build --source synthetic
--stocks 4000 --days 1250``) and (b) an upstream-width dataset (>= 1M rows x >= 600 numeric columns):
(a)'s first stocks plus noise columns and the leaky ``target_*_binary`` / target-encoding columns such
datasets carry, which the loader must exclude. Goal: peak <= 2 x the float32 panel + 1.5 GB.
``--quick`` uses small versions of both (seconds; no goal is judged on them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIG = Path(os.environ.get("ATFT_BIG_DIR", "/work/big"))
GOAL_SLACK_GB = 1.5
NOISE_SEED = 7


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB on Linux


def probe(args) -> None:
    """In the child: run ``atft train`` and print one JSON line at step ``--steps``, then exit at once.

    Only the light panel module is imported before ``atft train`` starts (its hook is installed there), so
    the command's own start-up (the dataset read overlapping the training libraries' imports) is what is
    timed; the training classes are hooked once the panel is loaded, when they are imported anyway."""
    import psutil

    started = psutil.Process().create_time()
    import atft.data.panel as panel_mod
    from atft import cli

    rec: dict = {"steps": 0}
    real_load = panel_mod.load_panel

    def load_panel(*a, **k):
        panel = real_load(*a, **k)
        rec.update(shape=list(panel.X.shape), panel_dtype=str(panel.X.dtype),
                   loaded_s=time.time() - started, rss_after_load_gb=_rss_gb())
        hook_training()
        return panel

    def hook_training() -> None:
        from atft.training.datamodule import PanelDataModule
        from atft.training.module import ATFTLightningModule

        real_setup, real_batch_start = PanelDataModule.setup, ATFTLightningModule.on_train_batch_start

        def setup(self, stage=None):
            rec["dm"] = self
            return real_setup(self, stage)

        def on_train_batch_start(self, batch, batch_idx):
            rec["steps"] += 1
            if rec["steps"] == 1:
                rec["startup_s"] = time.time() - started
            if rec["steps"] > args.steps:
                report(rec, started)
                sys.stdout.flush()
                os._exit(0)  # the measurement is done: skip the rest of the epoch and the evaluation
            return real_batch_start(self, batch, batch_idx)

        PanelDataModule.setup, ATFTLightningModule.on_train_batch_start = setup, on_train_batch_start

    panel_mod.load_panel = load_panel  # before atft.training.train imports it
    dtype = [] if args.dtype == "float32" else [f"data.panel_dtype={args.dtype}"]  # older code has no such key
    code = cli.main(["train", "--data-path", args.data, "--run-dir", args.run_dir, "--max-epochs", "1",
                     f"train.log_dir={args.run_dir}/_logs", *dtype, *args.overrides])
    raise SystemExit(f"atft train ended (exit {code}) before the requested steps")


def report(rec: dict, started: float) -> None:
    dm = rec.pop("dm", None)
    graph = getattr(dm, "graph_builder", None)
    cache = getattr(graph, "_cache", {}) or {}
    per_day = sum(a.nbytes for v in cache.values() for a in v) / max(len(cache), 1)
    D, N, F = rec["shape"]
    rec.update(peak_rss_gb=_rss_gb(), panel_f32_gb=D * N * F * 4 / 1e9, wall_s=time.time() - started,
               graph_cache_epoch_gb=per_day * min(getattr(graph, "cache_days", 0), D) / 1e9 if graph else 0.0)
    print("PROBE " + json.dumps(rec))


def measure(data: Path, dtype: str, steps: int, src: str | None, overrides: list[str]) -> dict:
    """One probe process; its record plus the ratio and goal."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    if src:
        env["PYTHONPATH"] = src
    with tempfile.TemporaryDirectory() as run_dir:
        cmd = [sys.executable, __file__, "--probe", "--data", str(data), "--dtype", dtype, "--steps", str(steps),
               "--run-dir", run_dir, "--", *overrides]
        out = subprocess.run(cmd, env=env, cwd=run_dir, capture_output=True, text=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("PROBE ")), None)
    if line is None:
        return {"data": str(data), "dtype": dtype, "error": (out.stderr.strip().splitlines() or ["?"])[-1][:300]}
    rec = json.loads(line[6:])
    goal = 2 * rec["panel_f32_gb"] + GOAL_SLACK_GB
    return {"data": data.name, "dtype": dtype, "code": src or "this tree", **rec,
            "ratio_to_panel": rec["peak_rss_gb"] / rec["panel_f32_gb"], "goal_gb": goal,
            "meets_goal": rec["peak_rss_gb"] <= goal}


def build_synthetic(out: Path, stocks: int, days: int) -> Path:
    if not out.is_file():
        subprocess.run([sys.executable, "-m", "atft.cli", "dataset", "build", "--seed", "0", "--source", "synthetic",
                        "--stocks", str(stocks), "--days", str(days), "--out", str(out)], check=True)
    return out


def build_wide(base: Path, out: Path, stocks: int, noise_columns: int, rows_per_group: int = 100_000) -> Path:
    """``base``'s first ``stocks`` stocks plus ``noise_columns`` noise columns (a share with gaps, a few
    integer counts) and the target-derived columns of upstream datasets, written a row group at a time."""
    if out.is_file():
        return out
    import numpy as np
    import polars as pl
    import pyarrow.parquet as pq

    lazy = pl.scan_parquet(base)
    codes = lazy.select(pl.col("Code").unique().sort()).collect()["Code"][:stocks]
    frame = lazy.filter(pl.col("Code").is_in(codes.implode())).sort("Date", "Code").collect()
    rng = np.random.default_rng(NOISE_SEED)
    tmp = out.with_name(out.name + ".tmp")
    writer = None
    for start in range(0, frame.height, rows_per_group):
        part = frame.slice(start, rows_per_group)
        n = part.height
        cols = {f"noise_{j:03d}": rng.standard_normal(n).astype(np.float32) for j in range(noise_columns)}
        for j in range(0, noise_columns, 10):  # every tenth column has 20% gaps
            cols[f"noise_{j:03d}"][rng.random(n) < 0.2] = np.nan
        cols.update({f"count_{j}": rng.poisson(5, n).astype(np.int32) for j in range(5)})
        extra = pl.DataFrame(cols).with_columns(pl.col(pl.Float32).fill_nan(None))
        leaky = part.select(*[(pl.col(f"target_{h}d") > 0).cast(pl.Float32).alias(f"target_{h}d_binary")
                              for h in (1, 5, 10, 20)],
                            (pl.col("target_5d").mean().over("Date", "Sector")).alias("te_sec_target_5d"))
        table = pl.concat([part, extra, leaky], how="horizontal").to_arrow()
        writer = writer or pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table)
    writer.close()
    os.replace(tmp, out)
    return out


def datasets(quick: bool) -> list[tuple[str, Path]]:
    if quick:
        scratch = Path(tempfile.gettempdir()) / "atft_bench_memory"
        scratch.mkdir(exist_ok=True)
        base = build_synthetic(scratch / "synthetic_200x300.parquet", 200, 300)
        return [("synthetic 200 x 300", base),
                ("wide 100 x 300 + 150 noise", build_wide(base, scratch / "wide_100x300_n150.parquet", 100, 150))]
    base = build_synthetic(BIG / "synthetic_4000x1250.parquet", 4000, 1250)
    return [("(a) synthetic 4,000 x 1,250", base),
            ("(b) upstream width 1,000 x 1,250 + 530 noise",
             build_wide(base, BIG / "wide_synthetic_1000x1250_n530.parquet", 1000, 530))]


def render(result: dict) -> str:
    """The markdown section for ``benchmarks/results/latest.md``."""
    lines = ["## Training memory and start-up (`atft train`, setup + first steps)", "",
             f"Peak RSS of one `atft train` process through its first {result['steps']} optimiser steps (panel "
             "load, datamodule setup, ridge warm start included) against the dense float32 panel "
             f"`D x N x F x 4` bytes; goal <= 2 x panel + {GOAL_SLACK_GB} GB. Start-up: process start to the "
             "first training step. `graph cache/epoch` is the day-graph cache once an epoch has visited every "
             "day (not yet in the peak, which covers a few steps).", "",
             "| dataset | code | panel_dtype | D x N x F | float32 panel GB | peak RSS GB | x panel | goal GB | "
             "met | start-up s | panel load s | graph cache/epoch GB |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['label']} | {r.get('code', '')} | {r['dtype']} | failed: {r['error']} |")
            continue
        shape = " x ".join(f"{v:,}" for v in r["shape"])
        lines.append(f"| {r['label']} | {r['code']} | {r['dtype']} | {shape} | {r['panel_f32_gb']:.2f} | "
                     f"{r['peak_rss_gb']:.2f} | {r['ratio_to_panel']:.2f} | {r['goal_gb']:.2f} | "
                     f"{'yes' if r['meets_goal'] else 'no'} | {r['startup_s']:.1f} | {r['loaded_s']:.1f} | "
                     f"{r['graph_cache_epoch_gb']:.2f} |")
    lines += [""] + [f"- {note}" for note in result.get("notes", [])]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="results JSON")
    ap.add_argument("--quick", action="store_true", help="small datasets, float32 and bfloat16 only")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps per probe (default 5, quick 2)")
    ap.add_argument("--dtypes", default=None, help="comma list (default float32,float16,bfloat16)")
    ap.add_argument("--datasets", default="a,b", help="which of (a) the 5M-row and (b) the wide dataset")
    ap.add_argument("--baseline-src", default=None, help="an older checkout's src/: also measure it on (a)")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides passed to every `atft train`")
    args = ap.parse_args()
    if args.probe:
        return probe(args)
    steps = args.steps or (2 if args.quick else 5)
    dtypes = (args.dtypes or ("float32,bfloat16" if args.quick else "float32,float16,bfloat16")).split(",")
    overrides = list(args.overrides) + (["model.hidden_size=16", "train.batch.train_batch_size=256"]
                                        if args.quick else [])
    rows = []
    for i, (label, path) in enumerate(datasets(args.quick)):
        if "ab"[i] not in args.datasets.split(","):
            continue
        runs = [(d, None) for d in dtypes]
        if args.baseline_src and i == 0:
            runs.insert(0, ("float32", args.baseline_src))
        for dtype, src in runs:
            row = {"label": label, **measure(path, dtype, steps, src, overrides)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {"steps": steps, "quick": args.quick, "overrides": overrides, "rows": rows}
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_name(out.name + ".tmp").write_text(json.dumps(result, indent=2) + "\n")
        os.replace(out.with_name(out.name + ".tmp"), out)
    print(render(result))


if __name__ == "__main__":
    main()
