"""Dense day x stock panel: the ML dataset parquet as ``X[D, N, F]``, ``M[D, N]``, ``Y[D, N, H]``.

Any parquet that follows DESIGN.md's data contract loads here (ours, or a user's upstream dataset with
hundreds of columns). Targets are the ``target_{h}d`` columns; features are the other numeric columns,
except that no column whose name contains ``target`` (and no ``oracle_*`` column) is ever a feature.

Two statistics are fitted on data, both on the **training dates only**: the leakage screen (refuses a
feature whose mean daily IC with a forward target is implausibly high) and the robust scaler
(median / IQR, clipped). Shapes: ``D`` days, ``N`` stocks, ``F`` features, ``H`` horizons.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from omegaconf import OmegaConf

from atft.config import cfg_get
from atft.data.dense import (
    chunk_slices,
    column_chunks,
    fill_dense,
    null_counts,
    numpy_dtype,
)
from atft.data.screen import leakage_screen
from atft.data.splits import Splits, date_splits
from atft.errors import InputError
from atft.io_utils import parquet_schema, read_json, read_parquet

log = logging.getLogger(__name__)

TARGET_RE = re.compile(r"^target_(\d+)d$")
META_COLUMNS = ("Code", "Date", "Sector", "Market")
IQR_TO_STD = 1.349  # IQR of a standard normal: scaled features have ~unit spread on Gaussian data
MAX_SCALER_ROWS = 200_000  # quantiles on a seeded row subsample beyond this (huge upstream panels)


@dataclass
class RobustScaler:
    """Per-feature ``clip((x - median) / (IQR / 1.349), -clip, clip)``; NaN -> 0 after scaling."""

    center: np.ndarray  # [F]
    scale: np.ndarray  # [F]
    clip: float = 5.0

    def transform(self, x: np.ndarray) -> np.ndarray:
        """A scaled float32 copy of ``x [..., F]``."""
        return self.transform_inplace(np.array(x, dtype=np.float32))

    def transform_inplace(self, x: np.ndarray) -> np.ndarray:
        """Scale float32 ``x [D, N, F]`` in place, one day chunk at a time (no full-size temporaries)."""
        for c in chunk_slices(x.shape[0], x[0].nbytes) if x.ndim == 3 else [slice(None)]:
            v = x[c]  # a view
            v -= self.center
            v /= self.scale
            np.clip(v, -self.clip, self.clip, out=v)  # +-inf -> +-clip; NaN stays NaN
            np.copyto(v, 0.0, where=~np.isfinite(v))  # missing (and an overflow without a clip) -> 0
        return x

    def to_dict(self, names: list[str]) -> dict:
        return {"clip": self.clip, "features": {n: [float(c), float(s)] for n, c, s in
                                                zip(names, self.center, self.scale)}}


@dataclass
class Panel:
    """The dataset as dense arrays (see module docstring for the letters)."""

    X: np.ndarray  # [D, N, F] data.panel_dtype (float32 / float16 / bfloat16), scaled, NaN-free (missing -> 0)
    M: np.ndarray  # [D, N] bool: row exists and its features are mostly finite
    Y: np.ndarray  # [D, N, H] float32 raw forward returns, NaN where unknown
    Y_mask: np.ndarray  # [D, N, H] bool
    dates: np.ndarray  # [D] datetime64[D]
    codes: np.ndarray  # [N] str
    feature_names: list[str]
    horizons: list[int]
    sector_id: np.ndarray  # [D, N] int32 label as of each date, -1 missing
    market_id: np.ndarray  # [D, N] int32 label as of each date, -1 missing
    returns: np.ndarray | None  # [D, N] float32 daily returns for the day graph, NaN missing
    splits: Splits
    scaler: RobustScaler
    source: str = ""
    notes: list[str] = field(default_factory=list)
    nonfinite: dict = field(default_factory=dict)  # {"features": {col: n}, "targets": {col: n}}

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.X.shape  # type: ignore[return-value]


def _read_keys(path: Path) -> tuple[dict, pl.DataFrame]:
    """The file's schema and its key / label columns (``Code``, ``Date``, ``Sector``, ``Market``) only."""
    if not path.is_file():
        raise InputError(f"dataset {path} does not exist (build one with `atft dataset build`)")
    schema = parquet_schema(path, "dataset")
    for col in ("Code", "Date"):
        if col not in schema:
            raise InputError(f"dataset {path} has no {col!r} column (expected Code, Date, features, target_*d)")
    df = read_parquet(path, "dataset", columns=[c for c in META_COLUMNS if c in schema])
    return schema, df.with_columns(pl.col("Code").cast(pl.Utf8), pl.col("Date").cast(pl.Date))


def _index(df: pl.DataFrame, path: Path):
    """Sorted ``dates [D]`` and ``codes [N]``, each row's ``di, ni [R]`` and ``exists [D, N]``; refuses
    duplicate (Code, Date) rows (found as fewer cells than rows, then named by the slower exact check)."""
    date_levels, code_levels = df["Date"].unique().sort(), df["Code"].unique().sort()
    dates = date_levels.to_numpy().astype("datetime64[D]")  # [D]
    codes = code_levels.to_numpy().astype(str)  # [N] (UTF-8 byte order = code point order = np.sort's)
    di = date_levels.search_sorted(df["Date"]).to_numpy().astype(np.int64)  # [R], no per-row Python objects
    ni = code_levels.search_sorted(df["Code"]).to_numpy().astype(np.int64)  # [R]
    exists = np.zeros((len(dates), len(codes)), dtype=bool)  # [D, N]
    exists[di, ni] = True
    if exists.sum() != df.height:
        dup = df.select(pl.struct("Code", "Date").is_duplicated().sum()).item()
        first = df.filter(pl.struct("Code", "Date").is_duplicated()).row(0, named=True)
        raise InputError(f"dataset {path} has {dup} duplicate (Code, Date) rows, e.g. "
                         f"Code={first['Code']} Date={first['Date']}; expected one row per stock and day")
    return dates, codes, di, ni, exists


def read_sidecar(path: Path) -> dict:
    """The dataset's ``<path>.meta.json`` written by ``atft dataset build`` (``{}`` when there is none).

    The panel does not need it, but a damaged one means the dataset folder is damaged: refused in one line.
    """
    sidecar = Path(f"{path}.meta.json")
    if not sidecar.is_file():
        return {}
    meta = read_json(sidecar, "dataset sidecar")
    if not isinstance(meta, dict):
        raise InputError(f"dataset sidecar {sidecar} is damaged (expected a JSON object); restore or rebuild it")
    return meta


def detect_horizons(columns: list[str], wanted, path: Path) -> list[int]:
    found = sorted(int(m.group(1)) for c in columns if (m := TARGET_RE.match(c)))
    if not found:
        raise InputError(f"dataset {path} has no target_{{h}}d columns (expected e.g. target_1d)")
    if not wanted:
        return found
    missing = [h for h in wanted if h not in found]
    if missing:
        raise InputError(f"dataset {path} lacks target_{missing[0]}d (horizons found: {found})")
    return [int(h) for h in wanted]


def is_target_derived(name: str) -> bool:
    """Columns never allowed as features: anything named after a target, and oracle columns."""
    return "target" in name.lower() or name.lower().startswith("oracle_")


def detect_features(schema: dict, features_cfg, path: Path) -> tuple[list[str], list[str]]:
    """Numeric non-target columns of ``schema`` (name -> polars dtype), or the explicit include list; minus
    the exclude list and all-null columns (counted from the parquet's footer statistics). Returns the
    features and the all-null columns left out."""
    include = list(cfg_get(features_cfg, "include", []) or [])
    exclude = set(cfg_get(features_cfg, "exclude", []) or [])
    if include:
        for name in include:
            if name not in schema:
                raise InputError(f"data.features.include names {name!r}, which is not a column of {path}")
            if is_target_derived(name):
                raise InputError(f"data.features.include names {name!r}: target-derived columns are never features")
        names = include
    else:
        names = [c for c, t in schema.items()
                 if c not in META_COLUMNS and (t.is_numeric() or t == pl.Boolean) and not is_target_derived(c)]
    names = [n for n in names if n not in exclude]
    nulls, rows = null_counts(path, names)
    null_only = [n for n in names if nulls[n] == rows]
    names = [n for n in names if n not in null_only]
    if not names:
        raise InputError(f"dataset {path} has no usable feature columns (numeric, not target-derived)")
    return names, null_only


def mostly_finite(finite: np.ndarray, n_features: int) -> np.ndarray:
    """``[D, N]`` bool: rows with at least half of their ``n_features`` features finite (``finite``: counts)."""
    return finite >= 0.5 * n_features


def _nonfinite_note(counts: dict[str, int], what: str, action: str) -> str:
    """``non-finite feature values (NaN/inf) treated as missing: sig 3, noise_a 1``."""
    shown = ", ".join(f"{c} {n}" for c, n in list(counts.items())[:10])
    return f"non-finite {what} values (NaN/inf) {action}: {shown}{', ...' if len(counts) > 10 else ''}"


def _daily_ids(df: pl.DataFrame, col: str, di: np.ndarray, ni: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Point-in-time integer ids of a label column ``[D, N]``: each row's own label, -1 where it has
    none (no label that day, or no row). A stock keeps the label it had on each date."""
    ids = np.full(shape, -1, dtype=np.int32)  # [D, N] (int32: 40 MB for 2,500 days x 4,000 stocks)
    if col not in df.columns:
        return ids
    ranks = df[col].cast(pl.Utf8).rank("dense")  # 1.. in sorted label order, null where unlabelled
    ids[di, ni] = (ranks.cast(pl.Int32) - 1).fill_null(-1).to_numpy()
    return ids


def fit_scaler(X: np.ndarray, M: np.ndarray, days: np.ndarray, clip: float, seed: int = 0) -> RobustScaler:
    """Median / IQR per feature over the valid rows of ``days`` (training dates only).

    Beyond ``MAX_SCALER_ROWS`` valid rows, a seeded subsample; only the chosen rows are gathered.
    """
    days = np.asarray(days)
    di, ni = np.nonzero(M[days])  # valid rows in day-major order
    if len(di) > MAX_SCALER_ROWS:
        pick = np.random.default_rng(seed).choice(len(di), MAX_SCALER_ROWS, replace=False)
        di, ni = di[pick], ni[pick]
    if len(di) == 0:
        raise InputError("no valid feature rows on the training dates to fit the scaler")
    q25, q50, q75, std = np.empty((4, X.shape[2]), dtype=X.dtype)  # [F] each, float32 like the sample
    for c in chunk_slices(X.shape[2], 4 * len(di)):  # a few feature columns of the sample at a time
        rows = X[days[di], ni, c]  # [R, k]
        with np.testing.suppress_warnings() as sup:
            sup.filter(RuntimeWarning)
            q25[c], q50[c], q75[c] = np.nanpercentile(rows, [25, 50, 75], axis=0)
            std[c] = np.nanstd(rows, axis=0)
    scale = (q75 - q25) / IQR_TO_STD
    scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, np.where(std > 1e-12, std, 1.0))
    return RobustScaler(np.nan_to_num(q50).astype(np.float32), scale.astype(np.float32), float(clip))


def graph_returns(X_raw: np.ndarray, names: list[str], Y: np.ndarray, horizons: list[int],
                  column: str | None) -> tuple[np.ndarray | None, str]:
    """Daily returns ``[D, N]`` for the day-graph correlations, and where they came from.

    The configured feature column (``model.graph.return_feature``, default ``returns_1d``) if present;
    else ``target_1d`` shifted by one day (``Close(t)/Close(t-1) - 1`` is known at the close of ``t``).
    """
    if column and column in names:
        return X_raw[..., names.index(column)].copy(), column
    if 1 in horizons:
        ret = np.full(Y.shape[:2], np.nan, dtype=np.float32)  # [D, N]
        ret[1:] = Y[:-1, :, horizons.index(1)]
        return ret, "target_1d shifted by one day"
    return None, "none"


@dataclass
class PanelFile:
    """What :func:`load_panel` reads from the dataset before it fits anything (:func:`read_panel_file`)."""

    df: pl.DataFrame  # [R] key and label columns
    dates: np.ndarray  # [D]
    codes: np.ndarray  # [N]
    di: np.ndarray  # [R] each row's day
    ni: np.ndarray  # [R] each row's stock
    exists: np.ndarray  # [D, N] bool
    meta: dict  # the sidecar
    horizons: list[int]
    names: list[str]  # features
    null_only: list[str]  # all-null columns left out of the features
    dtype: str  # data.panel_dtype
    Y: np.ndarray  # [D, N, H] float32
    bad_targets: dict[str, int]
    X: np.ndarray | None  # [D, N, F] float32 raw features (None for a half-precision panel: read later)
    finite: np.ndarray | None  # [D, N] int32 finite features per row (with X)
    bad_features: dict[str, int]


def read_panel_file(path, data_cfg) -> PanelFile:
    """Keys, targets and (for a float32 panel) the raw features of ``path``; refuses a bad file in one line."""
    path = Path(path)
    schema, df = _read_keys(path)  # [R] keys and labels only; features are read column by column
    dates, codes, di, ni, exists = _index(df, path)
    meta = read_sidecar(path)
    horizons = detect_horizons(list(schema), cfg_get(data_cfg, "horizons"), path)
    names, null_only = detect_features(schema, cfg_get(data_cfg, "features"), path)
    dtype = str(cfg_get(data_cfg, "panel_dtype", "float32"))
    numpy_dtype(dtype)  # refuse a bad value before the long read
    shape = (len(dates), len(codes))
    Y, bad_targets = fill_dense(path, [f"target_{h}d" for h in horizons], di, ni, shape)  # [D, N, H]
    X, finite, bad_features = None, None, {}
    if dtype == "float32":  # a half-precision panel is read a few columns at a time later (``_load_half``)
        finite = np.zeros(shape, dtype=np.int32)
        X, bad_features = fill_dense(path, names, di, ni, shape, finite=finite)  # [D, N, F] float32, raw
    return PanelFile(df, dates, codes, di, ni, exists, meta, horizons, names, null_only, dtype, Y, bad_targets,
                     X, finite, bad_features)


_prefetched: tuple[tuple, Future] | None = None  # (what was asked for, the read) of ``prefetch_panel``


def _prefetch_key(path, data_cfg) -> tuple | None:
    """The file (resolved path, size, modification time) and the data config; None without a readable file
    or a resolvable config."""
    try:
        stat = Path(path).resolve().stat()
        cfg = OmegaConf.to_container(data_cfg, resolve=True) if OmegaConf.is_config(data_cfg) else data_cfg
        return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, json.dumps(cfg, sort_keys=True, default=str)
    except Exception:  # noqa: BLE001 - no file, or a config that does not resolve: no prefetch; load_panel reports it
        return None


def prefetch_panel(path, data_cfg) -> None:
    """Start :func:`read_panel_file` in a background thread; the next :func:`load_panel` of the same file with
    the same data config takes its result instead of reading again (a read error surfaces there, as it
    would have). ``atft train`` calls this before it imports the training libraries: the read (decoding
    and compiled scatter, mostly outside the GIL) and the imports (one core) overlap."""
    global _prefetched
    key = _prefetch_key(path, data_cfg)
    if key is None:
        return  # no file: load_panel says so in one line
    future: Future = Future()

    def read() -> None:
        try:
            future.set_result(read_panel_file(path, data_cfg))
        except BaseException as exc:  # noqa: BLE001 - handed to load_panel, which raises it
            future.set_exception(exc)

    _prefetched = key, future
    # a daemon: a run that fails before it loads the panel exits at once instead of finishing the read
    threading.Thread(target=read, name="atft-prefetch", daemon=True).start()


def _take_prefetched(path, data_cfg) -> PanelFile | None:
    """The prefetched read of ``path`` if it was for this file and data config (waits for it); else None
    (a read for other arguments is waited for and dropped, so two panels never coexist)."""
    global _prefetched
    if _prefetched is None:
        return None
    (key, future), _prefetched = _prefetched, None
    if key != _prefetch_key(path, data_cfg):
        future.exception()  # wait; its result (or error) is not for this call
        return None
    return future.result()


def load_panel(path, data_cfg, *, model_cfg=None, scaler: RobustScaler | None = None,
               fit_days: np.ndarray | None = None) -> Panel:
    """Read ``path`` into a :class:`Panel` (splits, leakage screen and scaler fitted on training dates).

    Args:
        path: ML dataset parquet following the data contract.
        data_cfg: ``cfg.data`` (``horizons``, ``min_history_frac``, ``features``, ``split``, ``scaling``).
        model_cfg: ``cfg.model`` (only ``graph.return_feature`` is read); None -> ``returns_1d``.
        scaler: an already fitted scaler (e.g. from a checkpoint) to apply instead of fitting one.
        fit_days: day indices to fit the screen and scaler on; None -> the training split.
    """
    path = Path(path)
    file = _take_prefetched(path, data_cfg) or read_panel_file(path, data_cfg)
    di, ni, exists, names, horizons, dtype, Y = file.di, file.ni, file.exists, file.names, file.horizons, \
        file.dtype, file.Y
    shape = exists.shape
    if file.null_only:
        log.warning("dropping %d all-null feature columns, e.g. %s", len(file.null_only), file.null_only[0])
    splits = date_splits(file.dates, cfg_get(data_cfg, "split"), max(horizons))
    fit = splits.train if fit_days is None else np.asarray(fit_days)
    max_ic = cfg_get(cfg_get(data_cfg, "features"), "leakage_screen_max_abs_ic", 0.5)
    return_col = cfg_get(cfg_get(model_cfg, "graph"), "return_feature", "returns_1d")
    if dtype != "float32":  # never a float32 panel: screen, scale and cast a few columns at a time
        X, M, bad_features, scaler, returns, source = _load_half(
            path, names, (di, ni, exists), Y, horizons, fit, max_ic, return_col, scaler, data_cfg, dtype)
    else:
        X, bad_features = file.X, file.bad_features  # [D, N, F] float32, raw
        M = exists & mostly_finite(file.finite, len(names))  # [D, N]
        leakage_screen(X, Y, names, horizons, fit, max_ic)
        returns, source = graph_returns(X, names, Y, horizons, return_col)
    notes = [f"graph returns from {source}"]
    if isinstance(file.meta.get("source"), dict):
        notes.append(f"built by `atft dataset build` from source {file.meta['source'].get('name', '?')}")
    nonfinite = {"features": bad_features, "targets": file.bad_targets}
    for what, key, action in (("feature", "features", "treated as missing"), ("target", "targets", "masked")):
        if nonfinite[key]:  # fill_dense already turned them into NaN: a missing feature, a masked target
            notes.append(_nonfinite_note(nonfinite[key], what, action))
            log.warning("%s: %s", path.name, notes[-1])
    if source != return_col:
        log.warning("return feature %r not in %s: day-graph correlations use %s", return_col, path.name, source)
    if dtype == "float32":
        if scaler is None:
            scaler = _fit_configured_scaler(X, M, fit, cfg_get(data_cfg, "scaling"), len(names))
        X = scaler.transform_inplace(X)  # [D, N, F] NaN-free
    log.info("panel %s: %d days x %d stocks x %d features (%s, %.2f GB), horizons %s", path.name, *shape,
             len(names), dtype, X.nbytes / 1e9, horizons)
    return Panel(X=X, M=M, Y=Y, Y_mask=np.isfinite(Y), dates=file.dates, codes=file.codes, feature_names=names,
                 horizons=horizons, sector_id=_daily_ids(file.df, "Sector", di, ni, shape),
                 market_id=_daily_ids(file.df, "Market", di, ni, shape), returns=returns, splits=splits,
                 scaler=scaler, source=str(path), notes=notes, nonfinite=nonfinite)


def _load_half(path: Path, names: list[str], index, Y: np.ndarray, horizons: list[int], fit: np.ndarray,
               max_ic: float, return_col: str, scaler: RobustScaler | None, data_cfg, dtype: str):
    """A half-precision panel with no float32 panel beside it: the features are read twice, once for the
    row mask ``M`` (finite share >= 0.5) and once to screen, fit, scale and cast each column chunk.

    Returns ``X [D, N, F]`` in ``dtype``, ``M``, the non-finite counts, the scaler, graph returns and
    their source (as the float32 path does).
    """
    di, ni, exists = index
    shape = exists.shape
    finite, part = np.zeros(shape, dtype=np.int32), np.zeros(shape, dtype=np.int32)  # [D, N] finite features
    for cols in column_chunks(names, shape[0] * shape[1]):
        fill_dense(path, cols, di, ni, shape, finite=part)  # the chunk's values are dropped: counts only
        finite += part
    M = exists & mostly_finite(finite, len(names))  # [D, N]
    X = np.empty((*shape, len(names)), dtype=numpy_dtype(dtype))  # [D, N, F]
    bad: dict[str, int] = {}
    centers, scales, raw_returns = [], [], None
    start = 0
    for cols in column_chunks(names, shape[0] * shape[1]):
        part, counts = fill_dense(path, cols, di, ni, shape)  # [D, N, k] float32 raw
        bad.update(counts)
        leakage_screen(part, Y, cols, horizons, fit, max_ic)
        if return_col in cols:
            raw_returns = part[..., cols.index(return_col)].copy()  # [D, N]
        end = start + len(cols)
        part_scaler = (_fit_configured_scaler(part, M, fit, cfg_get(data_cfg, "scaling"), len(cols))
                       if scaler is None else RobustScaler(scaler.center[start:end], scaler.scale[start:end],
                                                          scaler.clip))
        centers.append(part_scaler.center)
        scales.append(part_scaler.scale)
        X[..., start:end] = part_scaler.transform_inplace(part)
        start = end
    if scaler is None:
        scaler = RobustScaler(np.concatenate(centers), np.concatenate(scales), part_scaler.clip)
    found = [] if raw_returns is None else [return_col]
    returns, source = graph_returns(np.zeros((*shape, 0), np.float32) if raw_returns is None
                                    else raw_returns[..., None], found, Y, horizons, return_col)
    return X, M, bad, scaler, returns, source


def _fit_configured_scaler(X: np.ndarray, M: np.ndarray, fit: np.ndarray, scaling, n_features: int) -> RobustScaler:
    """``data.scaling``: robust (fitted on ``fit`` days) or none (identity, no clip)."""
    method = cfg_get(scaling, "method", "robust")
    if method not in ("robust", "none"):
        raise InputError(f"data.scaling.method={method!r}: expected robust or none")
    if method == "none":
        return RobustScaler(np.zeros(n_features, np.float32), np.ones(n_features, np.float32), np.inf)
    return fit_scaler(X, M, fit, cfg_get(scaling, "clip", 5.0))
