"""A user's raw panel file (parquet or CSV), generic or J-Quants column names."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from atft.data.io import read_raw_file


def load_file(path: str | Path) -> tuple[pl.DataFrame, dict]:
    """Canonical raw panel from ``path`` (see ``atft.data.io``) and source info."""
    df = read_raw_file(path)
    return df, {"name": "file", "path": str(path), "columns": df.columns}
