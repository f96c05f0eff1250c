"""Outputs are written atomically: a failing writer leaves neither the target nor a temp file."""

from __future__ import annotations

import polars as pl
import pytest

from atft.io_utils import atomic_write, write_json, write_parquet


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})

    def broken(p):
        p.write_text('{"a": 2, "trunc')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == '{\n  "a": 1\n}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_parquet_round_trip(tmp_path):
    frame = pl.DataFrame({"Code": ["A", "B"], "x": [1.0, 2.0]})
    path = write_parquet(frame, tmp_path / "sub" / "f.parquet")
    assert pl.read_parquet(path).equals(frame)
