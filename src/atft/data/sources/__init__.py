"""Raw panel sources: ``sample``, ``synthetic``, ``jquants`` or a parquet/CSV path.

Each loader returns a polars DataFrame ``Code, Date, Open, High, Low, Close, Volume`` (plus optional
``TurnoverValue, AdjustmentFactor, Adjustment*, Sector, Market``) and a JSON-able info dict.
"""

from __future__ import annotations

import polars as pl


def load_source(build_cfg) -> tuple[pl.DataFrame, dict, pl.DataFrame | None]:
    """Dispatch on ``build_cfg.source``; returns ``(raw panel, source info, oracle or None)``.

    The oracle (synthetic source only) is ``Code, Date, oracle_{h}d``.
    """
    source = str(build_cfg.source)
    if source == "sample":
        from atft.data.sources.sample import load_sample

        return (*load_sample(str(build_cfg.sample_sectors)), None)
    if source == "synthetic":
        from atft.data.sources.synthetic import synthetic_market

        return synthetic_market(
            int(build_cfg.stocks), int(build_cfg.days), int(build_cfg.seed), list(build_cfg.horizons),
            build_cfg.get("synthetic"),
        )
    if source == "jquants":
        from atft.data.sources.jquants import load_jquants

        return (*load_jquants(build_cfg.start, build_cfg.end, build_cfg.cache_dir,
                              int(build_cfg.jquants_master_every)), None)
    from atft.data.sources.files import load_file

    return (*load_file(source), None)
