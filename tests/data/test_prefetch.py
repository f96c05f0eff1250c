"""``atft train`` reads the dataset in a background thread while the training libraries import
(``prefetch_panel``): the panel is the one a plain ``load_panel`` gives, read once, and errors and warnings
surface where they did."""

import logging

import numpy as np
import polars as pl
import pytest

from atft.config import load_config
from atft.data import panel as panel_mod
from atft.data.panel import load_panel, prefetch_panel
from atft.errors import InputError


def _dataset(path, null_column: bool = False):
    rng = np.random.default_rng(0)
    D, N = 90, 12
    dates = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-01-01") + D)
    cols = {"Code": np.tile([f"S{i:02d}" for i in range(N)], D), "Date": np.repeat(dates, N)}
    for j in range(5):
        cols[f"f{j}"] = rng.standard_normal(D * N).astype(np.float32)
    cols["f0"][::5] = np.nan
    cols["target_1d"] = rng.standard_normal(D * N).astype(np.float32) * 0.01
    frame = pl.DataFrame(cols).with_columns(pl.col("Date").cast(pl.Date))
    if null_column:
        frame = frame.with_columns(pl.lit(None, pl.Float32).alias("empty"))
    frame.write_parquet(path)
    return path


def _cfg(path, *extra):
    return load_config([f"data.path={path}", *extra]).data


@pytest.fixture
def reads(monkeypatch):
    """The file reads performed (``read_panel_file`` calls), prefetched or not."""
    calls = []
    real = panel_mod.read_panel_file

    def counted(path, data_cfg):
        calls.append(str(path))
        return real(path, data_cfg)

    monkeypatch.setattr(panel_mod, "read_panel_file", counted)
    monkeypatch.setattr(panel_mod, "_prefetched", None)
    return calls


def _same(a, b) -> None:
    for name in ("X", "M", "Y", "Y_mask", "sector_id", "market_id", "returns"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
    assert np.array_equal(a.dates, b.dates) and np.array_equal(a.codes, b.codes)
    assert a.feature_names == b.feature_names and a.notes == b.notes and a.nonfinite == b.nonfinite


def test_prefetched_panel_is_the_plain_one_and_the_file_is_read_once(tmp_path, reads):
    path = _dataset(tmp_path / "d.parquet")
    plain = load_panel(path, _cfg(path))
    assert len(reads) == 1
    prefetch_panel(path, _cfg(path))
    fetched = load_panel(path, _cfg(path))
    assert len(reads) == 2  # the prefetch's read only: load_panel took it
    _same(plain, fetched)
    load_panel(path, _cfg(path))  # a prefetch serves one load: the next one reads again
    assert len(reads) == 3


def test_prefetch_for_another_config_or_file_is_not_used(tmp_path, reads):
    path = _dataset(tmp_path / "d.parquet")
    other = _dataset(tmp_path / "other.parquet")
    prefetch_panel(path, _cfg(path, "data.horizons=[1]"))
    panel = load_panel(path, _cfg(path))  # another data config: read again
    assert len(reads) == 2
    _same(panel, load_panel(path, _cfg(path)))
    prefetch_panel(other, _cfg(other))
    load_panel(path, _cfg(path))
    assert reads[-2:] == [str(other), str(path)]


def test_prefetch_of_a_changed_file_is_not_used(tmp_path, reads):
    path = _dataset(tmp_path / "d.parquet")
    prefetch_panel(path, _cfg(path))
    frame = pl.read_parquet(path)
    frame.with_columns(pl.col("f1") * 2).write_parquet(path)  # rewritten after the prefetch started
    panel = load_panel(path, _cfg(path))
    assert len(reads) == 2
    col = panel.feature_names.index("f1")
    assert np.array_equal(panel.X[..., col], load_panel(path, _cfg(path)).X[..., col])


def test_a_bad_file_fails_at_load_panel_in_one_line(tmp_path, reads):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not a parquet file")
    prefetch_panel(path, _cfg(path))  # the read fails in the background thread
    with pytest.raises(InputError) as prefetched:
        load_panel(path, _cfg(path))
    with pytest.raises(InputError) as plain:
        load_panel(path, _cfg(path))
    assert str(prefetched.value) == str(plain.value) and "\n" not in str(plain.value)
    prefetch_panel(tmp_path / "missing.parquet", _cfg(path))  # no file: nothing started
    assert panel_mod._prefetched is None


def test_warnings_of_a_prefetched_read_are_logged_by_load_panel(tmp_path, reads, caplog):
    path = _dataset(tmp_path / "d.parquet", null_column=True)
    prefetch_panel(path, _cfg(path))
    panel_mod._prefetched[1].result()  # the read is over before anyone listens
    with caplog.at_level(logging.WARNING, logger="atft.data.panel"):
        panel = load_panel(path, _cfg(path))
    assert "empty" not in panel.feature_names
    assert any("dropping 1 all-null feature columns, e.g. empty" in r.getMessage() for r in caplog.records)
