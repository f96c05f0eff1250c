"""Helpers of the fault-matrix tests (imported by name; conftest.py holds the fixtures)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

# overrides(data_path, run_dir, **extra): `atft train` key=value arguments for a seconds-long CPU run
from synthetic_panel import fast_overrides as overrides  # noqa: E402,F401
from synthetic_panel import write_dataset  # noqa: E402,F401


def one_error_line(err: str) -> str:
    """The single ``atft: error:`` line of a refused command (asserts there is exactly one line)."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("atft: error: "), err
    return lines[0]


def truncate(src: Path, dst: Path, keep: float = 0.5) -> Path:
    """``head -c`` a file: its first ``keep`` share of bytes."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst
