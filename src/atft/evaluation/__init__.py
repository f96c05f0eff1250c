"""Evaluation: metrics (one definition each), backtests, baselines, comparisons and reports."""
