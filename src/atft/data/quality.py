"""The data-quality report of a dataset build (``PATH.quality.json``) and its printed summary."""

from __future__ import annotations

import polars as pl


def _events(df: pl.DataFrame) -> list[dict]:
    out = []
    for row in df.sort("Date", "Code").iter_rows(named=True):
        out.append({k: (str(v) if k == "Date" else round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
    return out


def quality_report(
    data: pl.DataFrame,
    groups: dict[str, list[str]],
    details: dict,
    rows_dropped: dict[str, int],
    extra: dict,
) -> dict:
    """Counts, missing shares per feature group and target, split events and refused split candidates
    with their evidence, kept large moves, null volumes, drops (``details`` from ``dataset_frame``)."""
    targets = details["targets"]
    rows = data.height
    nulls = data.null_count().row(0, named=True) if rows else {}
    missing = {g: round(sum(nulls[c] for c in cols) / max(rows * len(cols), 1), 4) for g, cols in groups.items()}
    return {
        **extra,
        "rows": rows,
        "stocks": data["Code"].n_unique(),
        "days": data["Date"].n_unique(),
        "date_range": [str(data["Date"].min()), str(data["Date"].max())],
        "n_features": sum(len(c) for c in groups.values()),
        "missing_share_by_group": missing,
        "missing_share_by_target": {t: round(nulls[t] / max(rows, 1), 4) for t in targets},
        "split_events": _events(details["split_events"]),
        "split_candidates_refused": _events(details["split_refused"]),
        "large_moves_kept": _events(details["large_moves"]),
        "null_volume_rows": details["null_volume_rows"],
        "rows_dropped": rows_dropped,
    }


def format_quality_summary(report: dict) -> str:
    """A short human-readable summary of ``report`` (what ``atft dataset build`` prints)."""
    lines = [
        f"dataset   {report.get('out', '?')}",
        f"source    {report.get('source', {}).get('name', '?')} (adjustment: {report.get('adjustment', '?')})",
        f"rows {report['rows']:,}  stocks {report['stocks']:,}  days {report['days']:,}  "
        f"{report['date_range'][0]}..{report['date_range'][1]}  features {report['n_features']}",
        "missing   " + "  ".join(f"{g} {v:.1%}" for g, v in report["missing_share_by_group"].items()),
        "targets   " + "  ".join(f"{t} {v:.1%} missing" for t, v in report["missing_share_by_target"].items()),
    ]
    events = report["split_events"]
    lines.append(f"splits    {len(events)} detected" + (":" if events else ""))
    lines += [f"  {e['Code']} {e['Date']} ratio {e['ratio']} raw return {e['raw_return']:+.1%} "
              f"volume x{e['volume_ratio']:.2f} (split implies x{e['expected_volume_ratio']:.2f})" for e in events]
    refused = report.get("split_candidates_refused", [])  # absent in reports of older builds
    if refused:
        lines.append(f"split-like moves not adjusted ({len(refused)}; volume does not scale by the ratio):")
        lines += [f"  {e['Code']} {e['Date']} ratio {e['ratio']} raw return {e['raw_return']:+.1%} volume x"
                  + (f"{e['volume_ratio']:.2f}" if e["volume_ratio"] is not None else "?") for e in refused]
    if report.get("null_volume_rows"):
        lines.append(f"volume    {report['null_volume_rows']:,} rows without volume (kept null; volume features "
                     "null where their window holds one)")
    moves = report["large_moves_kept"]
    if moves:
        lines.append(f"large one-day moves kept as real ({len(moves)}; clipped inside features, not in targets):")
        lines += [f"  {e['Code']} {e['Date']} return {e['raw_return']:+.1%}" for e in moves]
    dropped = report["rows_dropped"]
    lines.append("dropped   " + (", ".join(f"{n:,} rows: {why}" for why, n in dropped.items()) if dropped else "none"))
    if "build_seconds" in report:
        lines.append(f"built in  {report['build_seconds']:.1f}s")
    return "\n".join(lines)
