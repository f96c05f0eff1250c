"""Parquet columns -> one preallocated dense ``[D, N, K]`` array, a batch of rows at a time.

The loader never holds a frame of all features: it reads batches of rows of the parquet (each about
``CHUNK_BYTES`` of float32 values) and scatters each into the array (compiled, in a second thread while
the next batch is decoded), so its peak beside the array is about three batches (the batch being read
and two decode buffers). Statistics over the array (the leakage screen, the scaler) and its transforms
run over ``chunk_slices`` in place, for the same reason.

Shapes: ``D`` days, ``N`` stocks, ``K`` columns, ``R`` parquet rows.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from atft.errors import InputError
from atft.io_utils import parquet_row_batches, read_parquet

CHUNK_BYTES = 64 << 20  # float32 values per row batch read from the parquet / per day chunk of the panel
BLOCK_BYTES = 64 << 10  # cells scattered per block, column by column: small enough to stay in cache
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


@numba.njit(nogil=True, cache=True)
def _scatter(values, cells_index, cells, bad, finite, block_rows):  # pragma: no cover - compiled
    """Row ``r`` of ``values [K, n]`` (column-major rows: one column per row) -> ``cells[cells_index[r], :]``,
    non-finite values -> NaN, counted per column in ``bad [K]``; with ``finite`` (``[cells]``, else empty)
    also each cell's finite values. A block of ``block_rows`` rows at a time, column by column: the
    block's cells stay in cache while its columns arrive, and each column is read in order."""
    K, n = values.shape
    count = finite.shape[0] > 0
    for s in range(0, n, block_rows):
        e = min(n, s + block_rows)
        if count:
            for r in range(s, e):
                finite[cells_index[r]] = 0
        for j in range(K):
            missing = 0
            for r in range(s, e):
                v = values[j, r]
                c = cells_index[r]
                if np.isfinite(v):
                    if count:
                        finite[c] += 1
                else:
                    v = np.nan
                    missing += 1
                cells[c, j] = v
            bad[j] += missing


def _decode(batch, columns: list[str], path: Path, out: np.ndarray) -> np.ndarray:
    """The record batch's columns as float32 rows of ``out [K, >= n]`` (nulls -> NaN); returns ``out[:, :n]``."""
    n = batch.num_rows
    for j, col in enumerate(batch.columns):
        try:
            out[j, :n] = pc.cast(col, pa.float32()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise InputError(f"dataset {path}: column {columns[j]!r} is not numeric ({col.type})") from None
    return out[:, :n]


def fill_dense(path: Path, columns: list[str], di: np.ndarray, ni: np.ndarray, shape: tuple[int, int],
               finite: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, int]]:
    """Read ``columns`` into one ``[D, N, K]`` float32 array, NaN where missing, a batch of rows at a time.

    Each batch (about ``CHUNK_BYTES`` of float32 values: every column of a run of rows) is decoded into one
    of two ``[K, rows]`` buffers and scattered into the panel by a compiled kernel (``_scatter``: a block
    of about ``BLOCK_BYTES`` of cells at a time, column by column) in a second thread while the next
    batch is read and decoded into the other buffer, so reading and scattering overlap.

    Args:
        path: the parquet; its rows are in the order ``di`` / ``ni`` were computed from.
        columns: numeric / boolean columns; NaN and +-inf become NaN (missing).
        di, ni: ``[R]`` day and stock index of each row (no two rows share a cell).
        shape: ``(D, N)``.
        finite: optional ``[D, N]`` int32: set to each cell's number of finite values among ``columns``
            (cells without a row are left as they are).

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
    counts = np.zeros(0, np.int32) if finite is None else finite.reshape(-1)  # [D*N] view, or no counting
    bad = np.zeros(K, dtype=np.int64)  # non-finite values per column, nulls included
    nulls = np.zeros(K, dtype=np.int64)
    block, batch_rows = max(1, BLOCK_BYTES // (4 * K)), max(1, CHUNK_BYTES // (4 * K))  # rows
    buffers = [np.empty((K, min(batch_rows, R)), np.float32) for _ in range(2)]  # [K, rows]: one decoding, one scattered
    done = 0
    with ThreadPoolExecutor(max_workers=1) as scatter:
        pending = None
        for i, batch in enumerate(parquet_row_batches(path, "dataset", columns, batch_rows)):
            n = batch.num_rows
            if done + n > R:
                raise InputError(f"dataset {path}: column {columns[0]!r} has more than {R} rows")
            nulls += [col.null_count for col in batch.columns]
            values = _decode(batch, columns, path, buffers[i % 2])  # [K, n]
            del batch
            if pending is not None:
                pending.result()  # the other buffer is in the panel and free again
            pending = scatter.submit(_scatter, values, flat[done:done + n], cells, bad, counts, block)
            done += n
        if pending is not None:
            pending.result()
    if done != R:
        raise InputError(f"dataset {path}: column {columns[0]!r} has {done} rows, expected {R}")
    return out, {c: int(b - z) for c, b, z in zip(columns, bad, nulls, strict=True) if b > z}


def numpy_dtype(name: str):
    """The numpy dtype of ``data.panel_dtype`` (``bfloat16`` from ml_dtypes: numpy has none)."""
    if name not in PANEL_DTYPES:
        raise InputError(f"data.panel_dtype={name!r}: expected one of {', '.join(PANEL_DTYPES)}")
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)
