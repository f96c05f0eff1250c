"""J-Quants daily quotes and listed-company info, pulled with the official ``jquants-api-client``.

The installed client (v2 API) authenticates with an API key: ``JQUANTS_API_KEY`` from the
environment or from a ``.env`` file in the working directory (read with python-dotenv, not copied
into ``os.environ``). The key is passed to the client and never logged or written anywhere.

Pulls: ``ClientV2.get_eq_bars_daily_range(start, end)`` (``/equities/bars/daily`` per date, all stocks,
following ``pagination_key``) and ``ClientV2.get_eq_master(date=end)`` (``/equities/master``: sector
``S33Nm`` -> ``Sector``, market segment ``MktNm`` -> ``Market``). Both are cached as parquet under
``cache_dir``; a later build over the same range reads the cache and needs no key or network.
Split handling uses the provider's adjusted prices (``AdjO/AdjH/AdjL/AdjC/AdjVo``).
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import polars as pl

from atft.data.io import canonical_columns
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


def _pull(start: str, end: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Network pull through the real client; HTTP failures become one-line InputErrors."""
    import requests
    from jquantsapi import ClientV2

    client = ClientV2(api_key=api_key())
    try:
        quotes = client.get_eq_bars_daily_range(start_dt=start, end_dt=end)
        master = client.get_eq_master(date=end)
    except requests.RequestException as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InputError(f"J-Quants request failed: {redact(first)}") from None
    if quotes.empty:
        raise InputError(f"J-Quants returned no daily quotes for {start}..{end}")
    quotes["Code"] = quotes["Code"].astype(str)
    master["Code"] = master["Code"].astype(str)
    return pl.from_pandas(quotes), pl.from_pandas(master)


def load_jquants(start, end, cache_dir) -> tuple[pl.DataFrame, dict]:
    """Raw panel (canonical columns, provider-adjusted prices kept) for ``start..end`` and source info."""
    if start is None or end is None:
        raise InputError("--source jquants needs --start YYYY-MM-DD and --end YYYY-MM-DD")
    start, end = _day(start, "start"), _day(end, "end")
    cache = Path(str(cache_dir))
    quotes_path, master_path = cache / f"daily_quotes_{start}_{end}.parquet", cache / f"listed_info_{end}.parquet"
    cached = quotes_path.is_file() and master_path.is_file()
    if cached:
        quotes, master = read_parquet(quotes_path, "J-Quants cache"), read_parquet(master_path, "J-Quants cache")
    else:
        quotes, master = _pull(start, end)
        _write_cache(quotes, quotes_path)
        _write_cache(master, master_path)
    info = master.select(
        pl.col("Code").cast(pl.Utf8),
        pl.col("S33Nm").cast(pl.Utf8).alias("Sector"),
        pl.col("MktNm").cast(pl.Utf8).alias("Market"),
    ).unique("Code", keep="last")
    quotes = canonical_columns(quotes, f"J-Quants daily quotes {start}..{end}")
    raw = quotes.drop([c for c in ("Sector", "Market") if c in quotes.columns]).join(info, on="Code", how="left")
    return raw, {"name": "jquants", "start": start, "end": end, "cache": [str(quotes_path), str(master_path)],
                 "from_cache": cached, "endpoints": ["/equities/bars/daily", "/equities/master"]}
