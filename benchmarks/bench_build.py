"""Dataset build at production size, and ten of its features against a straightforward pandas version.

1. ``atft dataset build --source synthetic --stocks 4000 --days 1250`` (5M rows) in a subprocess: wall
   seconds and the subprocess's own peak RSS (``ru_maxrss``), with the CPU seconds and the load average,
   since the 2-core machine is shared. ``--src DIR`` builds with another checkout's ``src`` (e.g. the
   code before a change) for a before/after pair under the same conditions.
2. On the same raw panel: ten per-stock features as a pandas user would write them (``groupby`` +
   ``rolling`` / ``pct_change``, same definitions: one-day moves clipped at +-0.4, windows of the
   stock's own rows, null until full) against ours (the build's own path: ``atft.data.compiled_features``,
   one compiled pass per stock). Each side is timed from the raw frame to its own natural result (numpy
   arrays aligned with the rows for pandas, a polars frame for ours, as the build holds it); both are then
   converted to numpy and checked to give the same numbers before the ratio is reported.

    python benchmarks/bench_build.py [--quick] [--out results/build.json] [--src DIR] [--before-src DIR]
                                     [--keep PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import polars as pl

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
FEATURES = ("returns_5d", "returns_20d", "realized_vol_20d", "realized_vol_60d", "ma_gap_20d", "ma_gap_60d",
            "rsi_14d", "bollinger_pos_20d", "volume_ratio_20d", "dist_high_20d")
CLIP = 0.4  # data.build.split_jump_threshold: one-day moves are clipped at +-this inside features
_CHILD = """
import json, resource, sys, time
from atft.cli import main
start = time.perf_counter()
rc = main(sys.argv[1:])
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"rc": rc, "wall_s": time.perf_counter() - start, "cpu_s": usage.ru_utime + usage.ru_stime,
                  "peak_rss_mb": usage.ru_maxrss / 1024}))
"""


def build(stocks: int, days: int, out: str, src: str) -> dict:
    """``atft dataset build`` in a fresh interpreter; its wall, CPU seconds and peak RSS."""
    args = ["dataset", "build", "--source", "synthetic", "--stocks", str(stocks), "--days", str(days), "--out", out]
    env = {**os.environ, "PYTHONPATH": src}
    load = os.getloadavg()[0]
    done = subprocess.run([sys.executable, "-c", _CHILD, *args], env=env, capture_output=True, text=True)
    if done.returncode or '"rc": 0' not in done.stdout:
        raise RuntimeError(f"build with {src} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "rows": stocks * days, "load_at_start": load,
            "src": src, "command": "atft " + " ".join(args)}


def pandas_features(df):
    """The ten features, pandas style: one ``groupby`` per rolling statistic. ``df`` sorted by Code, Date."""
    import pandas as pd

    g = df.groupby("Code", sort=False)

    def roll(s: pd.Series, k: int):
        return s.groupby(df["Code"], sort=False).rolling(k, min_periods=k)

    def flat(r: pd.Series) -> np.ndarray:
        return r.reset_index(level=0, drop=True).to_numpy()

    r = g["Close"].pct_change(fill_method=None).clip(-CLIP, CLIP)
    lr = np.log1p(r)
    out = {f"returns_{k}d": np.expm1(flat(roll(lr, k).sum())) for k in (5, 20)}
    for k in (20, 60):
        out[f"realized_vol_{k}d"] = flat(roll(lr, k).std()) * math.sqrt(252.0)
        out[f"ma_gap_{k}d"] = df["Close"].to_numpy() / flat(roll(df["Close"], k).mean()) - 1
    # max(r, 0): a stock's first day (no previous close) counts as no move, as in atft
    gain, loss = flat(roll(r.clip(lower=0).fillna(0), 14).mean()), flat(roll((-r).clip(lower=0).fillna(0), 14).mean())
    with np.errstate(invalid="ignore", divide="ignore"):
        out["rsi_14d"] = np.where(gain + loss > 0, 100 * gain / (gain + loss), np.where(np.isnan(gain), np.nan, 50.0))
        ma20, sd20 = flat(roll(df["Close"], 20).mean()), flat(roll(df["Close"], 20).std())
        out["bollinger_pos_20d"] = (df["Close"].to_numpy() - ma20) / (2 * sd20)
        out["volume_ratio_20d"] = df["Volume"].to_numpy() / flat(roll(df["Volume"], 20).mean())
    oc_hi = np.maximum(df["Open"], df["Close"])
    hi = np.minimum(np.maximum(df["High"], oc_hi), oc_hi * (1 + CLIP))
    out["dist_high_20d"] = df["Close"].to_numpy() / flat(roll(hi, 20).max()) - 1
    return out


def ours_features(raw) -> pl.DataFrame:
    """The same ten features as ``atft dataset build`` computes them (``pipeline.stock_inputs`` +
    ``pipeline.stock_features``: one compiled pass per stock), raw (unnormalised), as the build holds
    them: a polars frame."""
    from atft.data.pipeline import stock_features, stock_index, stock_inputs
    from atft.data.rolling import StockRows

    frame = raw.with_columns((pl.col("Close") * pl.col("Volume")).alias("DollarVolume"))
    return stock_features(stock_inputs(frame), StockRows(stock_index(frame)), list(FEATURES), CLIP)


def comparable(features) -> dict[str, np.ndarray]:
    """Either side's result as float64 numpy columns, missing (null, NaN, +-inf) as NaN: for the check only,
    outside the timings (each side is timed up to its own natural result: numpy arrays from pandas' rolling
    windows, a polars frame from ours)."""
    return {n: np.where(np.isfinite(v := np.asarray(features[n], dtype=np.float64)), v, np.nan) for n in FEATURES}


def timed(fn, *args):
    """``fn(*args)``, its wall seconds and this process's CPU seconds, kernel (system) seconds and minor page
    faults over the call (first touches of fresh memory: on this virtual machine a large share of a
    memory-bound step)."""
    from atft.training.cpu_share import usage_since

    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out = fn(*args)
    return out, {"wall_s": time.perf_counter() - start, **usage_since(before)}


def compare(stocks: int, days: int, src: str = SRC) -> dict:
    """Time pandas and ours on the same synthetic raw panel; check they agree; the ratio."""
    sys.path.insert(0, src)
    from atft.data.sources.synthetic import synthetic_market

    raw = synthetic_market(stocks, days, 0, [1])[0].sort("Code", "Date")
    pdf = raw.select("Code", "Open", "High", "Low", "Close", "Volume").to_pandas()
    # both first run on 20 stocks: imports, pandas' first-call paths, and ours' compiled kernels loaded from
    # their cache (compiled first if there is none) are per-process costs, timed apart from the ratio
    head = raw.filter(pl.col("Code").is_in(raw["Code"].unique(maintain_order=True).head(20).implode()))
    start = time.perf_counter()
    pandas_features(head.select("Code", "Open", "High", "Low", "Close", "Volume").to_pandas())
    pandas_first = time.perf_counter() - start
    start = time.perf_counter()
    ours_features(head)
    ours_first = time.perf_counter() - start
    theirs, pandas_use = timed(pandas_features, pdf)
    ours, ours_use = timed(ours_features, raw)
    theirs, ours = comparable(theirs), comparable({n: ours[n].to_numpy() for n in FEATURES})
    # ours once more: the same work on memory the process has touched before (the difference is the cost
    # of fresh memory), for the explanation only; the ratio is of the first runs
    again = timed(ours_features, raw)[1]
    worst = {}
    for name in FEATURES:
        a, b = ours[name], theirs[name]
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            raise AssertionError(f"{name}: pandas and atft disagree on which rows are missing")
        ok = ~np.isnan(a)
        worst[name] = float(np.max(np.abs(a[ok] - b[ok]) / (1 + np.abs(b[ok])))) if ok.any() else 0.0
        if worst[name] > 1e-6:  # float64 rounding of two rolling algorithms, divided by a small std at worst
            raise AssertionError(f"{name}: pandas and atft differ by {worst[name]:.2e}")
    return {"rows": raw.height, "features": list(FEATURES), "pandas_s": pandas_use["wall_s"],
            "ours_s": ours_use["wall_s"], "speedup": pandas_use["wall_s"] / ours_use["wall_s"],
            "max_rel_diff": max(worst.values()), "first_call_s": {"pandas": pandas_first, "ours": ours_first},
            "usage": {"pandas": pandas_use, "ours": ours_use, "ours_again": again}}


def render(result: dict) -> str:
    """The markdown section of ``latest.md``."""
    b, c = result["build"], result["compare"]
    lines = ["## Dataset build (`atft dataset build --source synthetic`)", "",
             "| code | rows | wall s | CPU s | peak RSS GiB | load at start |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    rows = [("before (`--before-src`)", r) for r in result.get("before", [])] + [("this checkout", b)]
    for label, row in rows:
        lines.append(f"| {label} | {row['rows']:,} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} | "
                     f"{row['peak_rss_mb'] / 1024:.2f} | {row['load_at_start']:.2f} |")
    lines += ["", "Goal at 5M rows: <= 90 s and <= 6 GB peak RSS (wall time on a 2-core machine shared with other "
              "jobs rises with the load; CPU seconds do not)."]
    lines += ["", f"Ten features ({', '.join(c['features'])}) on the same {c['rows']:,}-row panel: pandas "
              f"(groupby + rolling) {c['pandas_s']:.1f} s, atft {c['ours_s']:.2f} s: **{c['speedup']:.1f}x** (goal >= 10x); "
              f"largest relative difference between the two {c['max_rel_diff']:.1e} (same missing rows)."]
    if "first_call_s" in c:
        first = c["first_call_s"]
        lines += ["", f"Both ran first on 20 stocks, outside the timing (per-process costs): pandas "
                  f"{first['pandas']:.2f} s, atft {first['ours']:.2f} s (its compiled feature kernels loaded from "
                  "their cache, or compiled when there is none)."]
    if "usage" in c:
        lines += ["", "| run | wall s | CPU s | of which kernel s | minor page faults |", "| --- | ---: | ---: | ---: | ---: |"]
        for key, label in (("pandas", "pandas"), ("ours", "atft"), ("ours_again", "atft again, same process (not in the ratio)")):
            u = c["usage"][key]
            lines.append(f"| {label} | {u['wall_s']:.2f} | {u['cpu_s']:.2f} | {u['system_s']:.2f} | {u['minor_faults']:,} |")
        lines += ["", "Kernel seconds are mostly first touches of fresh memory (page faults); the repeat runs the "
                  "same code on memory the process has used before."]
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="300 stocks x 500 days")
    ap.add_argument("--stocks", type=int, default=4000)
    ap.add_argument("--days", type=int, default=1250)
    ap.add_argument("--src", default=SRC, help="the src directory whose atft builds (default this checkout's)")
    ap.add_argument("--before-src", default=None, help="also build with this src first (the code before a change)")
    ap.add_argument("--keep", default=None, help="write the dataset here (default a temporary directory)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "build.json"))
    args = ap.parse_args()
    stocks, days = (300, 500) if args.quick else (args.stocks, args.days)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.before_src:
            result["before"] = [build(stocks, days, os.path.join(tmp, "before.parquet"), args.before_src)]
        result["build"] = build(stocks, days, args.keep or os.path.join(tmp, "data.parquet"), args.src)
    print(json.dumps(result["build"]), flush=True)
    result["compare"] = compare(stocks, days, args.src)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".tmp", "w") as fh:
        json.dump(result, fh, indent=2)
    os.replace(args.out + ".tmp", args.out)
    print(render(result))


if __name__ == "__main__":
    main()
