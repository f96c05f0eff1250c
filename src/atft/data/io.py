"""Reading and validating raw daily panels (parquet or CSV) into the canonical raw schema.

Canonical raw columns: ``Code`` (string), ``Date`` (date), ``Open, High, Low, Close, Volume``
(float64), optional ``TurnoverValue``, ``AdjustmentFactor``, ``Adjustment{Open,High,Low,Close,Volume}``,
``Sector``, ``Market``. Input names are matched case-insensitively against generic and J-Quants
aliases (v1 ``AdjustmentClose`` and v2 ``AdjC`` style). Every problem raises ``InputError`` with one line naming the file, column and value.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from atft.errors import InputError

REQUIRED = ("Code", "Date", "Open", "High", "Low", "Close", "Volume")
PRICES = ("Open", "High", "Low", "Close")
NUMERIC = (*PRICES, "Volume", "TurnoverValue", "AdjustmentFactor",
           "AdjustmentOpen", "AdjustmentHigh", "AdjustmentLow", "AdjustmentClose", "AdjustmentVolume")
# canonical name -> accepted spellings (compared lower-case, without "_" and " "), in priority order
ALIASES: dict[str, tuple[str, ...]] = {
    "Code": ("code", "symbol", "ticker", "localcode", "securitycode"),
    "Date": ("date", "tradedate", "tradingdate", "datetime", "timestamp"),
    "Open": ("open", "o"), "High": ("high", "h"), "Low": ("low", "l"), "Close": ("close", "c"),
    "Volume": ("volume", "vo"),
    "TurnoverValue": ("turnovervalue", "turnover", "dollarvolume", "va"),
    "AdjustmentFactor": ("adjustmentfactor", "adjfactor"),
    **{f"Adjustment{c}": (f"adjustment{c.lower()}", f"adj{a}") for c, a in
       (("Open", "o"), ("High", "h"), ("Low", "l"), ("Close", "c"), ("Volume", "vo"))},
    "Sector": ("sector", "sector33codename", "s33nm", "sector17codename", "s17nm"),
    "Market": ("market", "marketcodename", "mktnm"),
}
DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%d/%m/%Y", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S")


def _key(name: str) -> str:
    return name.lower().replace("_", "").replace(" ", "")


def canonical_columns(df: pl.DataFrame, where: str) -> pl.DataFrame:
    """Rename known columns to canonical names, drop the rest; error on a missing required column."""
    by_key: dict[str, str] = {}
    for col in df.columns:
        by_key.setdefault(_key(col), col)
    mapping = {}
    for canon, aliases in ALIASES.items():
        found = next((by_key[a] for a in aliases if a in by_key), None)
        if found is not None:
            mapping[found] = canon
    for canon in REQUIRED:
        if canon not in mapping.values():
            raise InputError(
                f"{where}: missing required column {canon!r} (accepted names: {', '.join(ALIASES[canon])}; "
                f"found: {', '.join(df.columns[:12])})"
            )
    return df.select(list(mapping)).rename(mapping)


def _first_bad(df: pl.DataFrame, col: str, ok: pl.Expr) -> tuple[int, object]:
    bad = df.with_row_index("_row").filter(pl.col(col).is_not_null() & ~ok)
    return int(bad["_row"][0]), bad[col][0]


def _numeric(df: pl.DataFrame, where: str) -> pl.DataFrame:
    """Cast numeric columns to float64; a value that is not a number is an error naming it."""
    for col in (c for c in NUMERIC if c in df.columns):
        if df[col].dtype.is_numeric():
            df = df.with_columns(pl.col(col).cast(pl.Float64))
            continue
        text = pl.col(col).cast(pl.Utf8).str.strip_chars()
        df = df.with_columns(pl.when(text == "").then(None).otherwise(text).alias(col))
        parsed = pl.col(col).cast(pl.Float64, strict=False)
        if df.select((pl.col(col).is_not_null() & parsed.is_null()).any()).item():
            row, value = _first_bad(df, col, parsed.is_not_null())
            raise InputError(f"{where}: column {col!r} has non-numeric value {value!r} (row {row + 1}); expected numbers")
        df = df.with_columns(parsed)
    return df


def parse_dates(df: pl.DataFrame, where: str) -> pl.DataFrame:
    """Parse ``Date`` (date, datetime, YYYYMMDD integer or one of DATE_FORMATS strings)."""
    dtype = df["Date"].dtype
    if dtype == pl.Date:
        return df
    if isinstance(dtype, pl.Datetime):
        return df.with_columns(pl.col("Date").dt.date())
    text = pl.col("Date").cast(pl.Utf8).str.strip_chars()
    for fmt in DATE_FORMATS:
        parsed = text.str.strptime(pl.Date, fmt, strict=False, exact=fmt.count("%H") == 0)
        if not df.select((pl.col("Date").is_not_null() & parsed.is_null()).any()).item():
            return df.with_columns(parsed.alias("Date"))
    parsed = text.str.strptime(pl.Date, DATE_FORMATS[0], strict=False)
    row, value = _first_bad(df, "Date", parsed.is_not_null())
    raise InputError(f"{where}: column 'Date' has unparseable date {value!r} (row {row + 1}); expected YYYY-MM-DD")


def validate_panel(df: pl.DataFrame, where: str) -> tuple[pl.DataFrame, dict[str, int]]:
    """Type-check and clean a canonical raw panel; returns ``(sorted panel, rows dropped by reason)``.

    Errors: empty panel, non-numeric values, unparseable dates, missing Code/Date, duplicate
    ``(Code, Date)``, non-positive prices, negative volume. Dropped (counted, not an error): rows
    whose open/high/low/close is missing (J-Quants reports untraded days that way) or NaN/inf. A NaN/inf
    ``Volume`` is treated as missing, and a missing ``Volume`` is kept null (counted in the build's
    quality report), never filled with 0.
    """
    if df.height == 0:
        raise InputError(f"{where}: no data rows (expected a daily OHLCV panel)")
    df = _numeric(df.with_columns(pl.col("Code").cast(pl.Utf8).str.strip_chars()), where)
    df = parse_dates(df, where)
    for col in ("Code", "Date"):
        if df[col].null_count():
            row = int(df.with_row_index("_row").filter(pl.col(col).is_null())["_row"][0])
            raise InputError(f"{where}: column {col!r} is empty at row {row + 1}; every row needs a {col}")
    dup = df.filter(pl.struct("Code", "Date").is_duplicated())
    if dup.height:
        first = dup.sort("Code", "Date").row(0, named=True)
        raise InputError(f"{where}: duplicate (Code, Date) rows, first ({first['Code']!r}, {first['Date']}); "
                         "expected one row per stock and date")
    dropped: dict[str, int] = {}
    # NaN/inf would flow into every feature of the stock's windows: treated as missing, and counted
    df = df.with_columns(pl.when(pl.col("Volume").is_finite()).then(pl.col("Volume")).alias("Volume"))
    nonfinite = pl.any_horizontal(pl.col(c).is_not_null() & ~pl.col(c).is_finite() for c in PRICES)
    n_nonfinite = df.select(nonfinite.sum()).item()
    if n_nonfinite:
        dropped["non-finite open/high/low/close (NaN/inf)"] = int(n_nonfinite)
        df = df.filter(~nonfinite)
    missing_price = pl.any_horizontal(pl.col(c).is_null() for c in PRICES)
    n_missing = df.select(missing_price.sum()).item()
    if n_missing:
        dropped["missing open/high/low/close (untraded day)"] = int(n_missing)
        df = df.filter(~missing_price)
    for col in PRICES:
        bad = df.filter(pl.col(col) <= 0)
        if bad.height:
            r = bad.row(0, named=True)
            raise InputError(f"{where}: column {col!r} has non-positive price {r[col]!r} at "
                             f"({r['Code']!r}, {r['Date']}); expected prices > 0")
    bad = df.filter(pl.col("Volume") < 0)
    if bad.height:
        r = bad.row(0, named=True)
        raise InputError(f"{where}: column 'Volume' has negative value {r['Volume']!r} at ({r['Code']!r}, {r['Date']})")
    if df.height == 0:
        raise InputError(f"{where}: no rows with prices left (expected a daily OHLCV panel)")
    return df.sort("Code", "Date"), dropped  # a missing volume stays null: 0 would be a fake no-trade day


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # polars/arrow raise several error types for damaged files
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: truncated or corrupt parquet file ({reason})") from None


def _read_csv(path: Path, head: bytes) -> pl.DataFrame:
    if b"\x00" in head:
        raise InputError(f"{path}: not a CSV text file (binary content); expected .parquet or .csv")
    try:
        return pl.read_csv(path, infer_schema=False, truncate_ragged_lines=False)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: unreadable CSV ({reason})") from None


def read_raw_file(path: str | Path) -> pl.DataFrame:
    """A raw panel file -> canonical columns (not yet type-checked; see ``validate_panel``).

    Parquet is recognised by its magic bytes, CSV by a ``.csv``/``.txt`` name and text content.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found; expected a .parquet or .csv panel or sample|synthetic|jquants")
    if not path.is_file():
        raise InputError(f"{path}: is not a file; expected a .parquet or .csv panel")
    with path.open("rb") as fh:
        head = fh.read(4096)
    if not head:
        raise InputError(f"{path}: empty file (0 bytes); expected a daily OHLCV panel")
    suffix = path.suffix.lower()
    if head[:4] == b"PAR1":
        df = _read_parquet(path)
    elif suffix in (".parquet", ".pq"):
        raise InputError(f"{path}: truncated or corrupt parquet file (no parquet magic bytes)")
    elif suffix in (".csv", ".txt"):
        df = _read_csv(path, head)
    else:
        raise InputError(f"{path}: neither parquet nor CSV (suffix {suffix or 'none'!r}); expected .parquet or .csv")
    if df.width == 0 or df.height == 0:
        raise InputError(f"{path}: no data rows (expected a daily OHLCV panel)")
    return canonical_columns(df, str(path))
