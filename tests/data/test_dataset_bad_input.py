"""Bad raw input: exit code 2, one line on stderr naming file/column/value, no output file."""

from __future__ import annotations

from pathlib import Path

import pytest
from dataset_helpers import random_walk_panel

from atft.cli import main


def _csv(tmp_path: Path, text: str, name: str = "raw.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


HEADER = "Code,Date,Open,High,Low,Close,Volume\n"
GOOD = "AAA,2021-01-04,10,11,9,10.5,1000\nAAA,2021-01-05,10.5,11,10,10.8,1200\n"


def _run(tmp_path: Path, source: Path, capsys) -> str:
    out = tmp_path / "out" / "ds.parquet"
    assert main(["dataset", "build", "--source", str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("atft: error: ") and "Traceback" not in err
    leftovers = list(out.parent.glob("*")) if out.parent.exists() else []
    assert not out.exists() and leftovers == []
    return err


def test_path_does_not_exist(tmp_path, capsys):
    err = _run(tmp_path, tmp_path / "nope.csv", capsys)
    assert "nope.csv" in err and "not found" in err


def test_missing_required_column(tmp_path, capsys):
    path = _csv(tmp_path, "Code,Date,Open,High,Low,Volume\nAAA,2021-01-04,10,11,9,1000\n")
    err = _run(tmp_path, path, capsys)
    assert "raw.csv" in err and "'Close'" in err and "missing required column" in err


def test_non_numeric_price(tmp_path, capsys):
    path = _csv(tmp_path, HEADER + GOOD + "AAA,2021-01-06,10.8,11,10,abc,1300\n")
    err = _run(tmp_path, path, capsys)
    assert "'Close'" in err and "'abc'" in err and "row 3" in err


def test_non_numeric_volume(tmp_path, capsys):
    path = _csv(tmp_path, HEADER + GOOD + "AAA,2021-01-06,10.8,11,10,10.9,lots\n")
    err = _run(tmp_path, path, capsys)
    assert "'Volume'" in err and "'lots'" in err


def test_unparseable_dates(tmp_path, capsys):
    path = _csv(tmp_path, HEADER + GOOD + "AAA,2021-13-45,10.8,11,10,10.9,1300\n")
    err = _run(tmp_path, path, capsys)
    assert "'Date'" in err and "'2021-13-45'" in err


def test_duplicate_rows_named(tmp_path, capsys):
    path = _csv(tmp_path, HEADER + "BBB,2021-01-04,1,1,1,1,1\n" + GOOD + "AAA,2021-01-05,10.5,11,10,10.8,1200\n")
    err = _run(tmp_path, path, capsys)
    assert "duplicate" in err and "('AAA', 2021-01-05)" in err


def test_non_positive_price(tmp_path, capsys):
    path = _csv(tmp_path, HEADER + GOOD + "AAA,2021-01-06,10.8,11,0,10.9,1300\n")
    err = _run(tmp_path, path, capsys)
    assert "'Low'" in err and "0.0" in err and "2021-01-06" in err


def test_empty_file(tmp_path, capsys):
    err = _run(tmp_path, _csv(tmp_path, ""), capsys)
    assert "raw.csv" in err and "empty" in err


def test_header_only_csv(tmp_path, capsys):
    err = _run(tmp_path, _csv(tmp_path, HEADER), capsys)
    assert "no data rows" in err


def test_truncated_parquet(tmp_path, capsys):
    path = tmp_path / "raw.parquet"
    random_walk_panel(n_stocks=3, n_days=40).write_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    err = _run(tmp_path, path, capsys)
    assert "raw.parquet" in err and "corrupt parquet" in err


def test_parquet_name_without_parquet_content(tmp_path, capsys):
    err = _run(tmp_path, _csv(tmp_path, HEADER + GOOD, name="raw.parquet"), capsys)
    assert "corrupt parquet" in err


@pytest.mark.parametrize("name,content", [("raw.json", b'{"a": 1}'), ("raw.png", b"\x89PNG\r\n\x1a\n\x00\x00")])
def test_neither_parquet_nor_csv(tmp_path, capsys, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    err = _run(tmp_path, path, capsys)
    assert name in err and "neither parquet nor CSV" in err


def test_binary_content_named_csv(tmp_path, capsys):
    path = tmp_path / "raw.csv"
    path.write_bytes(b"\x00\x01\x02binary\x00")
    err = _run(tmp_path, path, capsys)
    assert "not a CSV" in err
