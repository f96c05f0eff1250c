"""Atomic output: every file is written to ``<name>.tmp`` beside its target and renamed into place, so a
crash or a bad input never leaves a half-written file under the final name."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from atft.errors import InputError


def clean_json(value):
    """JSON-safe copy: non-finite floats -> None, numpy scalars -> Python numbers, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` then rename ``tmp`` to ``path``; the temp file is removed if ``write`` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_json(path: str | Path, what: str = "file"):
    """Parse a JSON file we wrote earlier; a damaged one is one ``InputError`` line naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} {path} is damaged (not valid JSON: {str(exc).splitlines()[0][:120]}); "
                         f"restore or rebuild it") from None


def read_parquet(path: str | Path, what: str = "file", columns: list[str] | None = None):
    """``polars.read_parquet`` (only ``columns`` when given); a truncated or corrupt file is one ``InputError``
    line naming it."""
    import polars as pl

    path = Path(path)
    try:
        return pl.read_parquet(path, columns=columns)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise _unreadable(path, what, exc) from None


def parquet_row_batches(path: str | Path, what: str, columns: list[str], batch_rows: int):
    """The file's ``columns`` as pyarrow record batches of up to ``batch_rows`` rows each, in file order, read
    a row group at a time; a truncated or corrupt file is one ``InputError`` line naming it."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        reader = pq.ParquetFile(path, pre_buffer=False)
        yield from reader.iter_batches(batch_size=max(1, int(batch_rows)), columns=columns, use_threads=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise _unreadable(path, what, exc) from None


def parquet_schema(path: str | Path, what: str = "file") -> dict:
    """Column name -> polars dtype of a parquet file, read from its footer (no data is read)."""
    import polars as pl

    path = Path(path)
    try:
        return dict(pl.read_parquet_schema(path))
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise _unreadable(path, what, exc) from None


def _unreadable(path: Path, what: str, exc: Exception) -> InputError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return InputError(f"{what} {path} is not a readable parquet file (truncated or corrupt?): {first}")


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj, **kwargs) -> Path:
    """``obj`` through ``clean_json`` (strict JSON: no NaN), indented."""
    return write_text(path, json.dumps(clean_json(obj), indent=2, **kwargs))


def write_parquet(frame, path: str | Path, **kwargs) -> Path:
    """``frame`` is a polars DataFrame."""
    return atomic_write(path, lambda p: frame.write_parquet(p, **kwargs))
