"""Benchmark-size learnability: ATFT against Ridge and LightGBM on several default-strength rich markets.

    python benchmarks/bench_learnable_large.py --seeds 0,1,2,3,4 --work /tmp/large \
        --out benchmarks/results/learnable_large.md [--stocks 200 --days 1400] [--collect] [override ...]

For each data seed: ``atft dataset build --source synthetic --stocks 200 --days 1400 --seed S`` (the rich
preset at its default strength; 1400 days leave 209 scored test days, 700 leave 99) and
``atft compare --models atft,ridge,lightgbm`` with the config below plus the overrides given. ``--collect`` only tabulates compare folders already in ``--work``.
The table gives each seed's 1d RankIC, the paired ATFT-minus-baseline differences with their HAC SE, and
the RankIC of ATFT and LightGBM against the hidden-cluster and volume-conditional components, and ATFT's
validation RankIC at its last epoch as a share of its best epoch's (the overfitting goal); the last row
pools the seeds (mean difference, SE = sqrt(sum SE^2) / seeds: the markets are independent).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from atft.evaluation.hac import pool_independent
from atft.evaluation.leaderboard import rank_ic_difference

# the benchmark's model size and the eight features of the test markets (docs/evaluation.md)
CONFIG = ["model.hidden_size=32", "data.lookback=10",
          "data.features.include=[returns_1d,returns_2d,returns_5d,returns_20d,volume_zscore_20d,volume_ratio_5d,"
          "sector_rel_return_1d,sector_return_5d]"]
EPOCHS = 12


def run_seed(work: Path, seed: int, overrides: list[str], stocks: int = 200, days: int = 1400) -> Path:
    data, out = work / f"rich{stocks}x{days}_s{seed}.parquet", work / f"cmp_s{seed}"
    atft = [sys.executable, "-m", "atft.cli"]
    if not data.is_file():
        subprocess.run([*atft, "dataset", "build", "--source", "synthetic", "--stocks", str(stocks), "--days", str(days),
                        "--seed", str(seed), "--out", str(data)], check=True)
    subprocess.run([*atft, "compare", "--data-path", str(data), "--models", "atft,ridge,lightgbm",
                    "--max-epochs", str(EPOCHS), "--out", str(out), *CONFIG, *overrides], check=True)
    return out


def scored_days(board: dict) -> int:
    """Days with a 1d RankIC (the test split's last day has no realised target yet)."""
    return int(next(c for c in board["comparisons"] if c["horizon"] == "1d")["rank_ic"]["days"])


def last_vs_best(folder: Path) -> float:
    """ATFT's validation RankIC (1d) at its last epoch / at its best epoch."""
    epochs = [json.loads(line) for line in (folder / "atft" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    val = [e["val"]["1d"]["rank_ic"] for e in epochs]
    return val[-1] / max(val)


def table(boards: dict[int, dict], overrides: list[str], size: str = "200 stocks x 1400 days",
          stability: dict[int, float] | None = None) -> str:
    ric = {s: {m: b["models"][m]["1d"]["rank_ic"]["mean"] for m in ("atft", "ridge", "lightgbm", "oracle")}
           for s, b in boards.items()}
    part = {s: {m: {c: b["decomposition"]["models"][m]["1d"][c]["rank_ic"] for c in ("cluster", "conditional")}
                for m in ("atft", "lightgbm")} for s, b in boards.items()}
    lines = ["# Learnability at benchmark size (benchmarks/bench_learnable_large.py)", "",
             f"Rich planted market at default strength, {size} per data seed, 1d RankIC on each "
             f"seed's test days; ATFT: `{' '.join(CONFIG + overrides)}`, {EPOCHS} epochs at most; "
             "(t) = paired difference / HAC SE; val last / best = ATFT's validation RankIC at its last epoch "
             "over its best epoch's.", "",
             "| data seed | days | ATFT | Ridge | LightGBM | oracle | ATFT / oracle | ATFT − Ridge (t) | "
             "ATFT − LightGBM (t) | cluster part ATFT / LGBM | conditional part ATFT / LGBM | val last / best |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    stability = stability or {}
    pooled = {"ridge": [], "lightgbm": []}
    for s, b in boards.items():
        r, p = ric[s], part[s]
        cells = []
        for other in ("ridge", "lightgbm"):
            d, se = rank_ic_difference(b, "atft", other)
            pooled[other].append((d, se))
            cells.append(f"{d:+.4f} ({d / se:+.1f})")
        lines.append(f"| {s} | {scored_days(b)} | {r['atft']:.4f} | {r['ridge']:.4f} | {r['lightgbm']:.4f} | "
                     f"{r['oracle']:.4f} | {r['atft'] / r['oracle']:.0%} | {cells[0]} | {cells[1]} | "
                     f"{p['atft']['cluster']:.2f} / {p['lightgbm']['cluster']:.2f} | "
                     f"{p['atft']['conditional']:.2f} / {p['lightgbm']['conditional']:.2f} | "
                     f"{format(stability[s], '.0%') if s in stability else ''} |")
    n = len(boards)
    mean = {m: sum(v[m] for v in ric.values()) / n for m in ("atft", "ridge", "lightgbm", "oracle")}
    cells = []
    for other in ("ridge", "lightgbm"):
        d, se = pool_independent(pooled[other])
        cells.append(f"{d:+.4f} ({d / se:+.1f})")
    days = sum(scored_days(b) for b in boards.values())
    lines.append(f"| pooled ({n} seeds) | {days} | {mean['atft']:.4f} | {mean['ridge']:.4f} | {mean['lightgbm']:.4f} | "
                 f"{mean['oracle']:.4f} | {mean['atft'] / mean['oracle']:.0%} | {cells[0]} | {cells[1]} | | | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "learnable_large.md"))
    ap.add_argument("--stocks", type=int, default=200)
    ap.add_argument("--days", type=int, default=1400)
    ap.add_argument("--collect", action="store_true", help="tabulate the compare folders already in --work")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    boards, stability = {}, {}
    for seed in (int(s) for s in args.seeds.split(",")):
        folder = work / f"cmp_s{seed}" if args.collect else run_seed(work, seed, args.overrides, args.stocks,
                                                                     args.days)
        boards[seed] = json.loads((folder / "leaderboard.json").read_text())
        stability[seed] = last_vs_best(folder)
    text = table(boards, args.overrides, f"{args.stocks} stocks x {args.days} days", stability)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
