"""``atft dataset build``: raw panel -> adjusted prices -> features + targets -> parquet, meta, quality.

Pipeline: load the source, validate it (``io.validate_panel``), adjust for splits
(``adjustment.adjust_prices``), compute features (``features``, ``cross_section``) and targets
(``targets``) on the adjusted panel, normalise per-stock features per date across stocks, cast features
and targets to float32 (``pipeline.assemble``: one feature group at a time, the numbers of
``compute_features`` + ``add_targets`` + ``cs_normalize``) and write everything atomically (temp
file, then rename): nothing is written when any step fails.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from omegaconf import OmegaConf

from atft.data.adjustment import adjust_prices, unexplained_jumps
from atft.data.io import validate_panel
from atft.data.pipeline import assemble
from atft.data.quality import quality_report
from atft.data.sources import load_source
from atft.data.targets import target_names

MARKET_WIDE_GROUPS = ("market",)


def dataset_frame(
    raw: pl.DataFrame, build_cfg, normalize: bool = True
) -> tuple[pl.DataFrame, dict[str, list[str]], dict]:
    """Validated raw panel -> the ML dataset frame (float32 features and targets), groups, details.

    Args:
        raw: canonical raw panel (see ``atft.data.io``), already validated and sorted.
        build_cfg: ``cfg.data.build``.
        normalize: per-date cross-sectional normalisation of per-stock features (default True;
            False gives the raw feature values, for inspection and tests).
    """
    horizons = [int(h) for h in build_cfg.horizons]
    adjusted, events, refused, method = adjust_prices(raw, build_cfg)
    threshold = float(build_cfg.split_jump_threshold)
    jumps = unexplained_jumps(adjusted, threshold, events.head(0))
    turnover = pl.col("TurnoverValue") if "TurnoverValue" in adjusted.columns else pl.lit(None, pl.Float64)
    base = adjusted.lazy().with_columns(
        pl.coalesce(turnover, pl.col("Close") * pl.col("Volume")).alias("DollarVolume"),
        # no label stays null: a shared "Unknown" group would gather exactly the stocks that later leave
        *[(pl.col(c) if c in adjusted.columns else pl.lit(None)).cast(pl.Utf8).alias(c) for c in ("Sector", "Market")],
    ).sort("Code", "Date").collect()
    del adjusted
    method_cs = str(build_cfg.get("cs_method", "zscore")) if normalize else None
    out, groups = assemble(base, threshold, horizons, method_cs, float(build_cfg.winsorize_sigma))
    targets = target_names(horizons)
    details = {"adjustment": method, "split_events": events, "split_refused": refused, "large_moves": jumps,
               "targets": targets, "null_volume_rows": int(raw["Volume"].null_count())}
    return out, groups, details


def _atomic_write(path: Path, write) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    return tmp


def _oracle_rows(panel: pl.DataFrame, oracle: pl.DataFrame) -> pl.DataFrame:
    """The oracle on the dataset's rows (``panel``'s, sorted by ``Code, Date``); no join when aligned."""
    keys = panel.select("Code", "Date")
    if oracle.height == keys.height and oracle.select("Code", "Date").equals(keys):
        return oracle
    return keys.join(oracle, on=["Code", "Date"], how="left").sort("Code", "Date")


def _meta(data: pl.DataFrame, groups, details, source_info, build_cfg) -> dict:
    return {
        "features": [f for names in groups.values() for f in names],
        "groups": groups,
        "normalization": {
            "cross_sectional": {"method": str(build_cfg.get("cs_method", "zscore")),
                                "winsorize_sigma": float(build_cfg.winsorize_sigma),
                                "groups": [g for g in groups if g not in MARKET_WIDE_GROUPS]},
            "raw_market_wide": {"groups": list(MARKET_WIDE_GROUPS),
                                "note": "one value per date; scale on training dates only"},
        },
        "validity": "a feature is null where its rolling window is incomplete",
        "horizons": [int(h) for h in build_cfg.horizons],
        "targets": details["targets"],
        "source": source_info,
        "rows": data.height,
        "stocks": data["Code"].n_unique(),
        "days": data["Date"].n_unique(),
        "date_range": [str(data["Date"].min()), str(data["Date"].max())],
        "adjustment": details["adjustment"],
        "build_config": OmegaConf.to_container(build_cfg, resolve=True),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def build_dataset(cfg) -> dict:
    """Build the ML dataset described by ``cfg.data.build``; returns the quality report.

    Writes ``out`` (zstd parquet), ``out.meta.json``, ``out.quality.json`` and, for the synthetic
    source, ``out.oracle.parquet`` (``Code, Date, oracle_{h}d``).
    """
    start = time.perf_counter()
    build_cfg = cfg.data.build
    raw, source_info, oracle = load_source(build_cfg)
    raw, dropped = validate_panel(raw, str(source_info.get("path", source_info["name"])))
    out = Path(str(build_cfg.out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmps: dict[Path, Path] = {}
    try:
        if oracle is not None:  # written first: its frame is freed before the features are computed
            keyed = _oracle_rows(raw, oracle)
            del oracle
            path = Path(f"{out}.oracle.parquet")
            tmps[path] = _atomic_write(path, lambda p: keyed.write_parquet(p, compression="zstd"))
            del keyed
        data, groups, details = dataset_frame(raw, build_cfg)
        del raw
        report = quality_report(data, groups, details, dropped,
                                {"out": str(out), "source": source_info, "adjustment": details["adjustment"]})
        report["build_seconds"] = round(time.perf_counter() - start, 2)
        meta = _meta(data, groups, details, source_info, build_cfg)
        files = {out: lambda p: data.write_parquet(p, compression="zstd")}
        files[Path(f"{out}.meta.json")] = lambda p: p.write_text(json.dumps(meta, indent=2, default=str))
        files[Path(f"{out}.quality.json")] = lambda p: p.write_text(json.dumps(report, indent=2, default=str))
        for path, write in files.items():
            tmps[path] = _atomic_write(path, write)
    except BaseException:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
        raise
    for path, tmp in tmps.items():
        tmp.replace(path)
    return report
