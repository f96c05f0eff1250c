"""Dense panel loading: feature detection, masks, leakage screen, training-only scaling, clear errors."""

import numpy as np
import polars as pl
import pytest
from omegaconf import OmegaConf

from atft.data.panel import load_panel
from atft.errors import InputError

N_DAYS, N_STOCKS = 40, 6


def _frame(seed=0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    dates = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-01-01") + N_DAYS)
    rows = N_DAYS * N_STOCKS
    t1 = rng.standard_normal(rows) * 0.01
    return pl.DataFrame({
        "Code": np.tile([f"C{i}" for i in range(N_STOCKS)], N_DAYS),
        "Date": np.repeat(dates, N_STOCKS),
        "feat_a": rng.standard_normal(rows).astype(np.float32),
        "feat_b": (rng.standard_normal(rows) * 10 + 3).astype(np.float32),
        "returns_1d": rng.standard_normal(rows).astype(np.float32),
        "target_1d": t1.astype(np.float32),
        "target_2d": (rng.standard_normal(rows) * 0.01).astype(np.float32),
        "target_1d_binary": (t1 > 0).astype(np.float32),  # derived from a target: never a feature
        "te_sec_target_2d": rng.standard_normal(rows).astype(np.float32),  # a target encoding
        "oracle_next": rng.standard_normal(rows).astype(np.float32),
        "Sector": np.tile(["A", "B", None, "A", "B", "A"], N_DAYS),
    }).with_columns(pl.col("Date").cast(pl.Date))


def _cfg(**kw):
    base = {"horizons": None, "min_history_frac": 0.5,
            "features": {"include": None, "exclude": [], "leakage_screen_max_abs_ic": 0.5},
            "split": {"train_frac": 0.6, "val_frac": 0.2, "train_end": None, "val_end": None, "embargo_days": None},
            "scaling": {"method": "robust", "clip": 5.0}}
    return OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(kw))


def _write(tmp_path, frame, name="ml.parquet"):
    path = tmp_path / name
    frame.write_parquet(path)
    return path


def test_dense_shapes_and_target_derived_columns_excluded(tmp_path):
    panel = load_panel(_write(tmp_path, _frame()), _cfg())
    assert panel.X.shape == (N_DAYS, N_STOCKS, 3) and panel.Y.shape == (N_DAYS, N_STOCKS, 2)
    assert panel.feature_names == ["feat_a", "feat_b", "returns_1d"]
    assert panel.horizons == [1, 2] and panel.M.all() and np.isfinite(panel.X).all()
    assert panel.sector_id.shape == (N_DAYS, N_STOCKS)  # labels as of each date
    assert (panel.sector_id == [0, 1, -1, 0, 1, 0]).all()  # missing sector -> -1
    assert (panel.market_id == -1).all()  # no Market column
    assert panel.returns is not None and panel.notes == ["graph returns from returns_1d"]


def test_missing_rows_and_nan_features_are_masked(tmp_path):
    frame = _frame().filter(~((pl.col("Code") == "C1") & (pl.col("Date") == pl.date(2024, 1, 5))))
    frame = frame.with_columns(
        pl.when((pl.col("Code") == "C2") & (pl.col("Date") == pl.date(2024, 1, 6))).then(None)
        .otherwise(pl.col("feat_a")).alias("feat_a"),
        pl.when((pl.col("Code") == "C2") & (pl.col("Date") == pl.date(2024, 1, 6))).then(None)
        .otherwise(pl.col("feat_b")).alias("feat_b"),
        pl.when(pl.col("Date") == pl.date(2024, 1, 7)).then(None).otherwise(pl.col("target_2d")).alias("target_2d"))
    panel = load_panel(_write(tmp_path, frame), _cfg())
    assert not panel.M[4, 1] and not panel.M[5, 2] and panel.M.sum() == N_DAYS * N_STOCKS - 2
    assert panel.X[4, 1].tolist() == [0.0, 0.0, 0.0]  # missing -> 0 after scaling
    assert not panel.Y_mask[6, :, 1].any() and panel.Y_mask[6, :, 0].all()


def test_include_and_exclude_lists(tmp_path):
    path = _write(tmp_path, _frame())
    assert load_panel(path, _cfg(features={"include": ["feat_b"]})).feature_names == ["feat_b"]
    assert load_panel(path, _cfg(features={"exclude": ["feat_a"]})).feature_names == ["feat_b", "returns_1d"]
    with pytest.raises(InputError, match="target-derived"):
        load_panel(path, _cfg(features={"include": ["target_1d_binary"]}))
    with pytest.raises(InputError, match="'nope', which is not a column"):
        load_panel(path, _cfg(features={"include": ["nope"]}))


def test_leakage_screen_names_the_leaking_column(tmp_path):
    frame = _frame().with_columns((pl.col("target_2d") * 3 + 1).alias("future_peek"))
    with pytest.raises(InputError, match="'future_peek' has mean daily IC \\+1.000 with target_2d"):
        load_panel(_write(tmp_path, frame), _cfg())


def test_scaler_is_fitted_on_training_dates_only(tmp_path):
    base = load_panel(_write(tmp_path, _frame(), "a.parquet"), _cfg())
    train_end = base.dates[base.splits.train[-1]]
    shifted = _frame().with_columns(
        pl.when(pl.col("Date") > pl.lit(train_end)).then(pl.col("feat_b") * 100 + 50).otherwise(pl.col("feat_b")))
    other = load_panel(_write(tmp_path, shifted, "b.parquet"), _cfg())
    assert np.array_equal(base.scaler.center, other.scaler.center)
    assert np.array_equal(base.scaler.scale, other.scaler.scale)
    train = base.splits.train
    assert np.array_equal(base.X[train], other.X[train])  # the training inputs did not move
    raw = _frame()["feat_b"].to_numpy().reshape(N_DAYS, N_STOCKS)[train]
    q25, q50, q75 = np.percentile(raw, [25, 50, 75])
    assert np.isclose(base.scaler.center[1], q50) and np.isclose(base.scaler.scale[1], (q75 - q25) / 1.349)
    assert np.abs(other.X).max() <= 5.0  # clipped


def test_graph_returns_fall_back_to_shifted_target(tmp_path):
    panel = load_panel(_write(tmp_path, _frame().drop("returns_1d")), _cfg())
    assert panel.notes == ["graph returns from target_1d shifted by one day"]
    assert np.array_equal(panel.returns[1:], panel.Y[:-1, :, 0], equal_nan=True)
    assert np.isnan(panel.returns[0]).all()


def test_clear_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_panel(tmp_path / "none.parquet", _cfg())
    with pytest.raises(InputError, match="no target_"):
        load_panel(_write(tmp_path, _frame().drop("target_1d", "target_2d"), "t.parquet"), _cfg())
    with pytest.raises(InputError, match="no usable feature columns"):
        load_panel(_write(tmp_path, _frame().select("Code", "Date", "target_1d"), "f.parquet"), _cfg())
    dup = pl.concat([_frame(), _frame().head(1)])
    with pytest.raises(InputError, match="duplicate \\(Code, Date\\) rows, e.g. Code=C0 Date=2024-01-01"):
        load_panel(_write(tmp_path, dup, "d.parquet"), _cfg())
    with pytest.raises(InputError, match="lacks target_5d"):
        load_panel(_write(tmp_path, _frame(), "h.parquet"), _cfg(horizons=[5]))
