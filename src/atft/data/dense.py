"""Parquet columns -> one preallocated dense ``[D, N, K]`` array, a few columns at a time.

The loader never holds a frame of all features: it reads ``column_chunks`` of the parquet (each about
``CHUNK_BYTES`` of float32 values), scatters each chunk into the array and drops it, so its peak beside
the array is one chunk (~2 x ``CHUNK_BYTES``). Statistics over the array (the leakage screen, the scaler)
and its transforms run over ``chunk_slices`` in place, for the same reason.

Shapes: ``D`` days, ``N`` stocks, ``K`` columns, ``R`` parquet rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from atft.errors import InputError
from atft.io_utils import read_parquet

CHUNK_BYTES = 64 << 20  # float32 values per column chunk read from the parquet / per day chunk of the panel
PANEL_DTYPES = ("float32", "float16", "bfloat16")


def column_chunks(names: list[str], rows: int, chunk_bytes: int | None = None) -> list[list[str]]:
    """``names`` split into consecutive groups of about ``chunk_bytes`` (default ``CHUNK_BYTES``) of float32
    values each."""
    per = max(1, (chunk_bytes or CHUNK_BYTES) // max(4 * rows, 1))
    return [names[i:i + per] for i in range(0, len(names), per)]


def chunk_slices(n: int, item_bytes: int, chunk_bytes: int | None = None) -> list[slice]:
    """Consecutive slices of ``range(n)`` of about ``chunk_bytes`` (default ``CHUNK_BYTES``) each, e.g. days
    of the panel (``item_bytes``: one day's bytes) or feature columns of a row sample."""
    per = max(1, (chunk_bytes or CHUNK_BYTES) // max(item_bytes, 1))
    return [slice(s, min(s + per, n)) for s in range(0, n, per)]


def null_counts(path: Path, names: list[str]) -> tuple[dict[str, int], int]:
    """Nulls per column and the row count, from the footer statistics (columns without them are read)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    index = {meta.schema.column(j).path: j for j in range(meta.num_columns)}
    counts: dict[str, int] = {}
    unknown = []
    for name in names:
        stats = [meta.row_group(i).column(index[name]).statistics for i in range(meta.num_row_groups)] \
            if name in index else [None]
        if all(s is not None and s.has_null_count for s in stats):
            counts[name] = int(sum(s.null_count for s in stats))
        else:
            unknown.append(name)
    for cols in column_chunks(unknown, meta.num_rows):
        frame = read_parquet(path, "dataset", columns=cols)
        counts.update({c: frame[c].null_count() for c in cols})
    return counts, int(meta.num_rows)


def nonfinite_counts(df: pl.DataFrame, columns: list[str]) -> dict[str, int]:
    """Per column, the values that are present (not null) but NaN or +-inf; only columns that have any."""
    exprs = [pl.col(c).cast(pl.Float64).is_finite().not_().sum().alias(c) for c in columns]
    counts = df.select(exprs).row(0, named=True) if exprs else {}
    return {c: int(n) for c, n in counts.items() if n}


def fill_dense(path: Path, columns: list[str], di: np.ndarray, ni: np.ndarray,
               shape: tuple[int, int]) -> tuple[np.ndarray, dict[str, int]]:
    """Read ``columns`` chunk by chunk into one ``[D, N, K]`` float32 array, NaN where missing.

    Args:
        path: the parquet; its rows are in the order ``di`` / ``ni`` were computed from.
        columns: numeric / boolean columns; NaN and +-inf become NaN (missing).
        di, ni: ``[R]`` day and stock index of each row.
        shape: ``(D, N)``.

    Returns the array and :func:`nonfinite_counts` of the columns (values present but not finite).
    """
    out = np.full((*shape, len(columns)), np.nan, dtype=np.float32)  # [D, N, K]
    if not columns:
        return out, {}
    cells = out.reshape(-1, len(columns))  # [D*N, K] view: one flat row index scatters faster than two
    flat = di * shape[1] + ni  # [R]
    nonfinite: dict[str, int] = {}
    start = 0
    for cols in column_chunks(columns, len(di)):
        frame = read_parquet(path, "dataset", columns=cols)
        if frame.height != len(di):
            raise InputError(f"dataset {path}: column {cols[0]!r} has {frame.height} rows, expected {len(di)}")
        nonfinite.update(nonfinite_counts(frame, cols))
        values = frame.select(pl.col(c).cast(pl.Float32) for c in cols).to_numpy()  # [R, k]
        del frame
        values = values.astype(np.float32, copy=not values.flags.writeable)  # a one-column frame is zero-copy
        values[~np.isfinite(values)] = np.nan
        cells[flat, start:start + len(cols)] = values
        start += len(cols)
    return out, nonfinite


def finite_share_at_least(X: np.ndarray, share: float) -> np.ndarray:
    """``[D, N]`` bool: rows whose share of finite features is at least ``share``; one day chunk at a time."""
    out = np.empty(X.shape[:2], dtype=bool)  # [D, N]
    for c in chunk_slices(X.shape[0], X[0].nbytes):
        out[c] = np.isfinite(X[c]).mean(-1) >= share
    return out


def numpy_dtype(name: str):
    """The numpy dtype of ``data.panel_dtype`` (``bfloat16`` from ml_dtypes: numpy has none)."""
    if name not in PANEL_DTYPES:
        raise InputError(f"data.panel_dtype={name!r}: expected one of {', '.join(PANEL_DTYPES)}")
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)
