"""Parquet columns -> one preallocated dense ``[D, N, K]`` array, a batch of rows at a time.

The loader never holds a frame of all features: it reads batches of rows of the parquet (each about
``CHUNK_BYTES`` of float32 values), scatters each batch into the array and drops it, so its peak beside
the array is one batch (~2 x ``CHUNK_BYTES``). Statistics over the array (the leakage screen, the scaler)
and its transforms run over ``chunk_slices`` in place, for the same reason.

Shapes: ``D`` days, ``N`` stocks, ``K`` columns, ``R`` parquet rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from atft.errors import InputError
from atft.io_utils import parquet_row_batches, read_parquet

CHUNK_BYTES = 64 << 20  # float32 values per row batch read from the parquet / per day chunk of the panel
BLOCK_BYTES = 2 << 20  # rows assembled from columns per block: small enough to stay in cache while filled
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


def fill_dense(path: Path, columns: list[str], di: np.ndarray, ni: np.ndarray,
               shape: tuple[int, int]) -> tuple[np.ndarray, dict[str, int]]:
    """Read ``columns`` into one ``[D, N, K]`` float32 array, NaN where missing, a batch of rows at a time.

    Each batch (about ``CHUNK_BYTES`` of float32 values: every column of a run of rows) is converted to one
    row-major ``[rows, K]`` array a block of about ``BLOCK_BYTES`` at a time (the block's rows stay in cache
    while its columns arrive one by one; filling the whole batch column by column would go to memory once
    per column), and each block is scattered into the panel whole rows at a time (one slice assignment
    where the rows are consecutive cells, as in a sorted complete panel), so the cost is per row, not per
    row and column.

    Args:
        path: the parquet; its rows are in the order ``di`` / ``ni`` were computed from.
        columns: numeric / boolean columns; NaN and +-inf become NaN (missing).
        di, ni: ``[R]`` day and stock index of each row (no two rows share a cell).
        shape: ``(D, N)``.

    Returns the array and the non-finite counts of the columns (values present but NaN or +-inf; only the
    columns that have any).
    """
    K, R = len(columns), len(di)
    complete = R == shape[0] * shape[1]  # every cell has a row: nothing stays missing by default
    out = np.empty((*shape, K), np.float32) if complete else np.full((*shape, K), np.nan, np.float32)  # [D, N, K]
    if not columns:
        return out, {}
    cells = out.reshape(-1, K)  # [D*N, K] view: one flat row index scatters faster than two
    flat = di * shape[1] + ni  # [R]
    bad = np.zeros(K, dtype=np.int64)  # non-finite values per column, nulls included
    nulls = np.zeros(K, dtype=np.int64)
    done = 0
    S = max(1, BLOCK_BYTES // (4 * K))  # rows per block
    for batch in parquet_row_batches(path, "dataset", columns, CHUNK_BYTES // (4 * K)):
        n = batch.num_rows
        if done + n > R:
            raise InputError(f"dataset {path}: column {columns[0]!r} has more than {R} rows")
        cols = []  # [n] per column: arrow -> numpy, no frame library copies
        for j, col in enumerate(batch.columns):
            nulls[j] += col.null_count
            try:
                cols.append(pc.cast(col, pa.float32()).to_numpy(zero_copy_only=False))  # null -> NaN
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise InputError(f"dataset {path}: column {columns[j]!r} is not numeric ({col.type})") from None
        values = np.empty((n, K), dtype=np.float32)  # [n, K] row-major
        for s in range(0, n, S):  # a block of rows at a time: it stays in cache while its columns arrive
            e = min(n, s + S)
            block = values[s:e]
            for j, col in enumerate(cols):
                block[:, j] = col[s:e]
            missing = ~np.isfinite(block)
            bad += missing.sum(0)
            block[missing] = np.nan
            rows = flat[done + s:done + e]
            if rows[-1] - rows[0] == e - s - 1 and bool((np.diff(rows) == 1).all()):
                cells[rows[0]:rows[0] + e - s] = block  # consecutive cells: a plain copy
            else:
                cells[rows] = block
        del batch, cols, values
        done += n
    if done != R:
        raise InputError(f"dataset {path}: column {columns[0]!r} has {done} rows, expected {R}")
    return out, {c: int(b - z) for c, b, z in zip(columns, bad, nulls, strict=True) if b > z}


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
