"""J-Quants daily quotes and listed-company info, pulled with the official ``jquants-api-client``.

The installed client (v2 API) authenticates with an API key: ``JQUANTS_API_KEY`` from the
environment or from a ``.env`` file in the working directory (read with python-dotenv, not copied
into ``os.environ``). The key is passed to the client and never logged or written anywhere.

Pulls: ``ClientV2.get_eq_bars_daily_range(start, end)`` (``/equities/bars/daily`` per date, all stocks,
following ``pagination_key``) and ``ClientV2.get_eq_master(date=d)`` (``/equities/master`` as of date
``d``: sector ``S33Nm`` -> ``Sector``, market segment ``MktNm`` -> ``Market``) on every
``master_every``-th trading day of the range. Labels are **point in time**: a row at ``t`` carries the
labels of the latest snapshot at or before ``t`` that lists the stock, so a stock keeps the sector
and market it had while it traded (a stock delisted mid-range included) and a stock listed after
the latest snapshot has no label until the next one (never one taken from a later date). Both pulls
are cached as parquet under ``cache_dir``; a later build over the same range reads the cache and
needs no key or network. Split handling uses the provider's adjusted prices (``AdjO/AdjH/...``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import polars as pl

from atft.data.io import canonical_columns, parse_dates
from atft.errors import InputError
from atft.io_utils import read_parquet
from atft.redaction import redact

KEY_ENV = "JQUANTS_API_KEY"


def api_key(env_file: str | Path = ".env") -> str:
    """The API key from the environment, else from ``env_file``; InputError when neither has it."""
    key = os.environ.get(KEY_ENV, "").strip()
    if not key and Path(env_file).is_file():
        from dotenv import dotenv_values

        key = (dotenv_values(env_file).get(KEY_ENV) or "").strip()
    if not key:
        raise InputError(f"J-Quants API key not found: set {KEY_ENV} in the environment or in ./.env")
    return key


def _day(value, name: str) -> str:
    try:
        return date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise InputError(f"--{name} {value!r} is not a date; expected YYYY-MM-DD") from None


def _write_cache(df: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.write_parquet(tmp, compression="zstd")
    tmp.replace(path)


def _snapshot_dates(dates, every: int) -> list[str]:
    """Every ``every``-th trading day among ``dates`` (the first one included), ISO strings."""
    days = sorted({str(d)[:10] for d in dates})
    return days[::max(1, int(every))]


def _pull(start: str, end: str, every: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Network pull through the real client; HTTP failures become one-line InputErrors.

    Returns the daily quotes and the listed-info snapshots (``AsOf`` = the requested date)."""
    import pandas as pd
    import requests
    from jquantsapi import ClientV2

    client = ClientV2(api_key=api_key())
    try:
        quotes = client.get_eq_bars_daily_range(start_dt=start, end_dt=end)
        if quotes.empty:
            raise InputError(f"J-Quants returned no daily quotes for {start}..{end}")
        quotes["Code"] = quotes["Code"].astype(str)
        days = _snapshot_dates(quotes["Date"], every)
        with ThreadPoolExecutor(max_workers=client.MAX_WORKERS) as pool:  # as the client pulls its bars
            snapshots = [m.assign(AsOf=d) for d, m in zip(days, pool.map(lambda d: client.get_eq_master(date=d), days))]
    except requests.RequestException as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InputError(f"J-Quants request failed: {redact(first)}") from None
    master = pd.concat(snapshots, ignore_index=True)
    master["Code"] = master["Code"].astype(str)
    return pl.from_pandas(quotes), pl.from_pandas(master[["AsOf", "Code", "S33Nm", "MktNm"]])


def point_in_time_labels(quotes: pl.DataFrame, master: pl.DataFrame) -> pl.DataFrame:
    """``Code, Date`` of ``quotes`` joined backward (as of) to the listed-info snapshots ``AsOf, Code,
    S33Nm, MktNm``: each row gets the labels of the latest snapshot at or before its date that lists
    the stock, null when none does. Returns ``quotes`` with ``Sector`` and ``Market``."""
    info = master.select(
        pl.col("AsOf").cast(pl.Utf8).str.slice(0, 10).str.to_date("%Y-%m-%d"),
        pl.col("Code").cast(pl.Utf8),
        pl.col("S33Nm").cast(pl.Utf8).alias("Sector"),
        pl.col("MktNm").cast(pl.Utf8).alias("Market"),
    ).unique(["Code", "AsOf"], keep="last").sort("AsOf")
    quotes = quotes.drop([c for c in ("Sector", "Market") if c in quotes.columns])
    keyed = quotes.with_row_index("_row").with_columns(pl.col("Date").cast(pl.Date).alias("_asof")).sort("_asof")
    out = keyed.join_asof(info, left_on="_asof", right_on="AsOf", by="Code", strategy="backward",
                         check_sortedness=False)  # both sorted by date above
    return out.sort("_row").drop("_row", "_asof", "AsOf")


def load_jquants(start, end, cache_dir, master_every: int = 1) -> tuple[pl.DataFrame, dict]:
    """Raw panel (canonical columns, provider-adjusted prices kept, point-in-time ``Sector`` and
    ``Market``) for ``start..end`` and source info.

    Args:
        master_every: trading days between listed-info snapshots (``data.build.jquants_master_every``).
    """
    if start is None or end is None:
        raise InputError("--source jquants needs --start YYYY-MM-DD and --end YYYY-MM-DD")
    start, end = _day(start, "start"), _day(end, "end")
    cache = Path(str(cache_dir))
    quotes_path = cache / f"daily_quotes_{start}_{end}.parquet"
    master_path = cache / f"listed_info_{start}_{end}_every{int(master_every)}.parquet"
    cached = quotes_path.is_file() and master_path.is_file()
    if cached:
        quotes, master = read_parquet(quotes_path, "J-Quants cache"), read_parquet(master_path, "J-Quants cache")
    else:
        quotes, master = _pull(start, end, master_every)
        _write_cache(quotes, quotes_path)
        _write_cache(master, master_path)
    quotes = canonical_columns(quotes, f"J-Quants daily quotes {start}..{end}")
    raw = point_in_time_labels(parse_dates(quotes, f"J-Quants daily quotes {start}..{end}"), master)
    return raw, {"name": "jquants", "start": start, "end": end, "cache": [str(quotes_path), str(master_path)],
                 "from_cache": cached, "endpoints": ["/equities/bars/daily", "/equities/master"],
                 "labels": f"point in time: listed-info snapshot every {int(master_every)} trading day(s)",
                 "master_snapshots": master["AsOf"].n_unique()}
