#!/usr/bin/env python
"""The seed's training entry point, kept so its commands run as written (docs/training.md).

    ENABLE_GRAD_MONITOR=1 GRAD_MONITOR_EVERY=500 python scripts/integrated_ml_training_pipeline.py \\
        --data-path output/datasets/ml_dataset_latest_full.parquet --max-epochs 50 \\
        train.batch.train_batch_size=2048 train.trainer.precision=bf16-mixed

Same as ``atft train`` plus upstream's ``--batch-size``, ``--lr`` and ``--dry-run``. The run name (and so the
log file ``_logs/training/<run name>.log``) defaults to ``prod_validation_<timestamp>``, the name the
seed's monitoring commands grep for.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
if SRC.is_dir() and str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))  # runs from a checkout without `pip install -e .`


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-path", default=None, help="ML dataset parquet (default data.path)")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="= train.batch.train_batch_size")
    p.add_argument("--lr", type=float, default=None, help="= train.optimizer.lr")
    p.add_argument("--run-dir", default=None, help="run folder (default runs/<timestamp>)")
    p.add_argument("--run-name", default=None, help="log name (default prod_validation_<timestamp>)")
    p.add_argument("--resume-from", default=None, help="checkpoint to resume from (e.g. .../last.ckpt)")
    p.add_argument("--dry-run", action="store_true", help="load data and model, run one batch, no training")
    p.add_argument("overrides", nargs="*", help="Hydra overrides key=value")
    return p


def to_overrides(args: argparse.Namespace) -> list[str]:
    """Flags -> Hydra overrides, placed before the explicit ``key=value`` ones so those still win."""
    flags = {"data_path": "data.path", "max_epochs": "train.trainer.max_epochs",
             "batch_size": "train.batch.train_batch_size", "lr": "train.optimizer.lr", "run_dir": "run_dir",
             "run_name": "run_name"}
    out = [f"{key}={getattr(args, attr)}" for attr, key in flags.items() if getattr(args, attr) is not None]
    if args.run_name is None and not any(o.startswith("run_name=") for o in args.overrides):
        out.append(f"run_name=prod_validation_{datetime.now():%Y%m%d_%H%M%S}")
    return out + list(args.overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from atft.config import load_config
    from atft.data.panel import prefetch_panel

    try:
        cfg = load_config(to_overrides(args))
        prefetch_panel(cfg.data.path, cfg.data)  # the dataset is read while the training libraries import
        from atft.training.train import train

        train(cfg, resume_from=args.resume_from, dry_run_only=args.dry_run)
    except (ValueError, FileNotFoundError) as exc:
        if os.environ.get("ATFT_DEBUG"):
            raise
        print(f"integrated_ml_training_pipeline: error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
