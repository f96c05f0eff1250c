"""Learnability bench: ATFT variants against Ridge and LightGBM on small planted markets, several seeds.

    python benchmarks/bench_learnable.py --market rich --seeds 1,2 \
        --variant huber= --variant ic=train.loss.type=ic --out benchmarks/results/learnable.md

Each (variant, data seed) builds the market of ``tests/evaluation/test_learnable.py`` (60 stocks x 400 days,
the strengthened rich preset, or the linear preset) and runs ``atft compare`` with its small ATFT config
plus the variant's overrides. The table gives, per run, the 1d RankIC of ATFT, Ridge, LightGBM and the
oracle on the same test days, the paired ATFT-minus-baseline differences with their HAC SE, and ATFT's
RankIC against the planted components. A variant is ``name=key=value,key=value`` (``name=`` for none).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "evaluation"))

import test_learnable as setup  # noqa: E402  (the tests' market and small config are the bench's)

from atft.evaluation.hac import pool_independent  # noqa: E402
from atft.io_utils import write_text  # noqa: E402


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition("=")
    return name, [o for o in rest.split(",") if o]


def one_run(folder: Path, market: str, seed: int, extra: list[str]) -> dict:
    models = ["atft", "ridge", "lightgbm"]
    board = setup.planted_compare(folder, {"rich": setup.STRONG_RICH, "linear": setup.LINEAR}[market], models,
                                  data_seed=seed, extra=extra)
    ric = {m: board["models"][m]["1d"]["rank_ic"]["mean"] for m in [*models, "oracle"]}
    parts = (board.get("decomposition") or {}).get("models", {}).get("atft", {}).get("1d", {})
    return {"ric": ric, "vs_ridge": setup.atft_minus(board, "ridge"), "vs_lgbm": setup.atft_minus(board, "lightgbm"),
            "parts": {k: v["rank_ic"] for k, v in parts.items()}, "days": board["test_days"]}


def row(name: str, seed: int, r: dict) -> str:
    ric, (dr, sr), (dl, sl) = r["ric"], r["vs_ridge"], r["vs_lgbm"]
    parts = " ".join(f"{k} {v:.2f}" for k, v in r["parts"].items() if k != "total")
    return (f"| {name} | {seed} | {r['days']} | {ric['atft']:.4f} | {ric['ridge']:.4f} | {ric['lightgbm']:.4f} | "
            f"{ric['oracle']:.4f} | {ric['atft'] / ric['oracle']:.0%} | {dr:+.4f} ({dr / sr:+.1f}) | "
            f"{dl:+.4f} ({dl / sl:+.1f}) | {parts} |")


def pooled_row(name: str, runs: list[dict]) -> str:
    """The variant's seeds pooled: mean RankICs, mean paired differences with SE sqrt(sum SE^2) / seeds (the
    markets are independent); the goals are judged on this row."""
    mean = {m: sum(r["ric"][m] for r in runs) / len(runs) for m in ("atft", "ridge", "lightgbm", "oracle")}
    (dr, sr), (dl, sl) = (pool_independent([r[key] for r in runs]) for key in ("vs_ridge", "vs_lgbm"))
    return (f"| {name} | pooled ({len(runs)} seeds) | {sum(r['days'] for r in runs)} | {mean['atft']:.4f} | "
            f"{mean['ridge']:.4f} | {mean['lightgbm']:.4f} | {mean['oracle']:.4f} | "
            f"{mean['atft'] / mean['oracle']:.0%} | {dr:+.4f} ({dr / sr:+.1f}) | {dl:+.4f} ({dl / sl:+.1f}) | |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--market", choices=["rich", "linear"], default="rich")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--variant", action="append", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "learnable.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # tiny matrices; spinning OpenMP threads only slow a shared CPU
    variants = [parse_variant(v) for v in (args.variant or ["default="])]
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = [f"# Learnability bench: {args.market} planted market (benchmarks/bench_learnable.py)", "",
             "60 stocks x 400 days, tests/evaluation/test_learnable.py's market and small ATFT config; 1d RankIC on "
             "the same test days; Δ = ATFT minus the baseline, paired over days, (t) with the HAC SE.", "",
             "| variant | data seed | days | ATFT | Ridge | LightGBM | oracle | ATFT/oracle | Δ Ridge (t) | "
             "Δ LightGBM (t) | ATFT vs components |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in variants:
            runs = [one_run(Path(tmp) / f"{name}_{seed}", args.market, seed, extra) for seed in seeds]
            for seed, result in zip(seeds, runs):
                lines.append(row(name or "default", seed, result))
            lines.append(pooled_row(name or "default", runs))
            print("\n".join(lines[-len(runs) - 1:]), flush=True)
    write_text(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
