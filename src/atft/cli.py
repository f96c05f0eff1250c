"""Command line: parses arguments and dispatches to plain functions. No logic lives here.

Bad input (``InputError``/``ValueError``/``FileNotFoundError``) is printed as one line on stderr with
exit code 2, a run that cannot go on (``RunError``) with exit code 1; secrets are redacted from the
line. Set ``ATFT_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys


def _add_dataset(sub) -> None:
    ds = sub.add_parser("dataset", help="dataset commands").add_subparsers(dest="action", required=True)
    p = ds.add_parser("build", help="build the ML dataset (features + targets) from a raw panel")
    p.add_argument("--source", default=None, help="sample | synthetic | jquants | PATH.parquet | PATH.csv")
    p.add_argument("--out", default=None, help="output parquet (default output/datasets/ml_dataset_latest_full.parquet)")
    p.add_argument("--start", default=None, help="jquants: first date YYYY-MM-DD")
    p.add_argument("--end", default=None, help="jquants: last date YYYY-MM-DD")
    p.add_argument("--stocks", type=int, default=None, help="synthetic: number of stocks")
    p.add_argument("--days", type=int, default=None, help="synthetic: number of days")
    p.add_argument("--seed", type=int, default=None, help="synthetic: random seed")
    p.add_argument("overrides", nargs="*", help="Hydra overrides key=value")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train ATFT-GAT-FAN")
    p.add_argument("--data-path", default=None)
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--run-dir", default=None)
    p.add_argument("--resume-from", default=None)
    p.add_argument("--config", default=None, help="a full config YAML (a run's config.yaml, atft tune's "
                   "best.yaml); flags, env switches and key=value still override it")
    p.add_argument("overrides", nargs="*", help="Hydra overrides key=value")


def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="hyper-parameter search with Optuna on validation days (docs/tuning.md)")
    p.add_argument("--data-path", required=True)
    p.add_argument("--trials", type=int, required=True, help="trials this process runs")
    p.add_argument("--study", default=None, help="study name (default atft)")
    p.add_argument("--storage", default=None, help="SQLAlchemy URL, e.g. postgresql://user:pw@host/db "
                   "(default sqlite:///OUT/study.db)")
    p.add_argument("--folds", type=int, default=None, help="walk-forward folds before the test split "
                   "(default the config's train/validation split)")
    p.add_argument("--timeout", type=float, default=None, help="start no trial after this many seconds")
    p.add_argument("--space", default=None, help="search-space YAML (default configs/tune/default.yaml)")
    p.add_argument("--out", default=None, help="output folder (default runs/tune/<study>)")
    p.add_argument("--refit", action="store_true", help="train the best config and score the test split "
                   "beside the default config and the baselines")
    p.add_argument("overrides", nargs="*", help="Hydra overrides key=value for every trial")


def _add_model(sub) -> None:
    md = sub.add_parser("model", help="model commands").add_subparsers(dest="action", required=True)
    p = md.add_parser("summary", help="parameter count and one line per module")
    p.add_argument("--features", type=int, default=80, help="number of input features F")
    p.add_argument("overrides", nargs="*")


LAG_HELP = ("execution lag of the books in days (default train.eval.lag = 1: a signal from the close of t "
            "is traded at the close of t+1; 0 is not tradeable)")


def _add_evaluation(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics of a trained run on a split (JSON to the run folder)")
    p.add_argument("--run", dest="run_dir", default=None, help="run folder written by `atft train`")
    p.add_argument("--checkpoint", default=None, help="checkpoint (default RUN/checkpoints/best.ckpt)")
    p.add_argument("--data-path", default=None, help="dataset (default the run's data.path)")
    p.add_argument("--split", choices=["val", "test"], default="test")
    p.add_argument("--cost-bps", type=float, default=None, help="one-way cost on turnover (default train.eval.cost_bps)")
    p.add_argument("--folds", type=int, default=None, help="walk-forward folds (retrains the run's config per fold)")
    p.add_argument("--lag", type=int, default=None, help=LAG_HELP)

    p = sub.add_parser("predict", help="predictions for a trading system")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-path", required=True)
    p.add_argument("--date", default=None, help="only this trading day YYYY-MM-DD (default every day)")
    p.add_argument("--out", required=True, help="output parquet: Code, Date, pred_{h}d, rank_{h}d")

    p = sub.add_parser("backtest", help="long-short and long-only backtests of a predictions file")
    p.add_argument("--predictions", required=True, help="parquet with Code, Date, pred_{h}d, target_1d")
    p.add_argument("--cost-bps", type=float, default=10.0, help="one-way cost per unit traded (default 10)")
    p.add_argument("--lag", type=int, default=1, help="execution lag in days (default 1: trade the next close; 0 is not tradeable)")
    p.add_argument("--horizon", type=int, default=None, help="which pred_{h}d to trade (default the shortest)")
    p.add_argument("--top-k", type=int, default=None, help="long-only book size (default 10%% of the universe)")
    p.add_argument("--n-drop", type=int, default=None, help="long-only replacements per day (default k // 5)")
    p.add_argument("--out", default=None, help="output folder (default backtest/ beside the predictions)")

    p = sub.add_parser("compare", help="ATFT variants vs baselines on identical splits")
    p.add_argument("--data-path", required=True)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--folds", type=int, default=None, help="walk-forward folds (test blocks concatenated)")
    p.add_argument("--models", default=None, help="comma list; default all: atft, atft_fan_san, atft_fan, "
                   "atft_san, atft_no_gat, atft_linear, atft_no_linear, lightgbm, ridge, momentum_20d, "
                   "reversal_5d")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--cost-bps", type=float, default=None)
    p.add_argument("--lag", type=int, default=None, help=LAG_HELP)
    p.add_argument("overrides", nargs="*", help="Hydra overrides key=value for every ATFT run")

    p = sub.add_parser("report", help="self-contained HTML report of a run or compare folder")
    p.add_argument("path")
    p.add_argument("--out", default=None, help="HTML file (default PATH/report.html)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atft", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_dataset(sub)
    _add_train(sub)
    _add_tune(sub)
    _add_model(sub)
    _add_evaluation(sub)
    return parser


def _overrides(args, mapping: dict[str, str]) -> list[str]:
    """CLI flags -> Hydra overrides (flags first, so explicit key=value still wins)."""
    out = [f"{key}={getattr(args, attr)}" for attr, key in mapping.items() if getattr(args, attr) is not None]
    return out + list(getattr(args, "overrides", []) or [])


def dispatch(args) -> int:
    from atft.config import load_config

    kwargs = {k: v for k, v in vars(args).items() if k not in ("command", "action", "overrides")}
    if args.command == "dataset":
        from atft.data.build import build_dataset
        from atft.data.quality import format_quality_summary

        flags = {k: f"data.build.{k}" for k in ("source", "out", "start", "end", "stocks", "days", "seed")}
        report = build_dataset(load_config(_overrides(args, flags)))
        print(format_quality_summary(report))
    elif args.command == "train":
        from atft.data.panel import prefetch_panel

        flags = {"data_path": "data.path", "max_epochs": "train.trainer.max_epochs", "run_dir": "run_dir"}
        cfg = load_config(_overrides(args, flags), config_file=args.config)
        prefetch_panel(cfg.data.path, cfg.data)  # the dataset is read while the training libraries import
        from atft.training.train import train

        train(cfg, resume_from=args.resume_from)
    elif args.command == "tune":
        from atft.tuning.tune import tune

        tune(overrides=list(args.overrides or []), **kwargs)
    elif args.command == "model":
        from atft.model import model_summary

        print(model_summary(load_config(args.overrides), n_features=args.features))
    elif args.command == "evaluate":
        from atft.evaluation.evaluate import evaluate

        evaluate(**kwargs)
    elif args.command == "predict":
        from atft.evaluation.predict import predict

        predict(**kwargs)
    elif args.command == "backtest":
        from atft.evaluation.backtest import run_backtest

        run_backtest(**kwargs)
    elif args.command == "compare":
        from atft.evaluation.compare import compare

        compare(overrides=list(args.overrides or []), **kwargs)
    elif args.command == "report":
        from atft.evaluation.report import build_report

        print(build_report(args.path, out=args.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    from atft.errors import RunError
    from atft.redaction import redact

    args = build_parser().parse_args(argv)
    try:
        return dispatch(args)
    except (ValueError, FileNotFoundError, RunError) as exc:
        if os.environ.get("ATFT_DEBUG"):
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"atft: error: {redact(msg)}", file=sys.stderr)
        return 1 if isinstance(exc, RunError) else 2


if __name__ == "__main__":
    sys.exit(main())
