#!/usr/bin/env python
"""Print how well each planted component of a synthetic dataset ranks the realised returns (docs/data.md).

    python scripts/planted_components.py output/datasets/synthetic.parquet

One row per oracle column of the dataset's ``.oracle.parquet`` sidecar (``total`` = ``oracle_{h}d``), one
column per horizon: mean daily RankIC against ``target_{h}d`` over all days, ± its standard error. A
component that is constant on a day (the regime component before its change) has no RankIC that day.
"""

from __future__ import annotations

import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
if SRC.is_dir() and str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))  # runs from a checkout without `pip install -e .`


def main(argv: list[str]) -> int:
    from atft.evaluation.decomposition import component_rank_ics

    if len(argv) != 1:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    table = component_rank_ics(argv[0])
    horizons = list(table)
    parts = list(dict.fromkeys(p for by_part in table.values() for p in by_part))
    print("| component | " + " | ".join(f"RankIC {h} (days)" for h in horizons) + " |")
    print("|---" * (len(horizons) + 1) + "|")
    for part in parts:
        cells = [f"{s['rank_ic']:.4f} ± {s['se']:.4f} ({s['days']})" if (s := table[h].get(part)) else "n/a"
                 for h in horizons]
        print(f"| {part} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
