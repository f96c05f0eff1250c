"""The dataset frame one feature group at a time: the numbers of the one-plan build in bounded memory.

The one-plan build (``features.compute_features`` -> ``targets.add_targets`` ->
``cross_section.cs_normalize`` as one lazy polars query) holds every float64 feature, its winsorised
copy and four join outputs at once: 13 GB at 4,000 stocks x 1,250 days. Here a base frame of the raw
panel plus the daily helper columns is kept, and each feature group is computed from it with the same
polars expressions, normalised per date on a dense date x stock grid (``cross_section.zscore_grid``)
and stored as float32 at once, so only one group's float64 columns exist at a time. Market, beta and
sector features reuse ``cross_section``'s expressions on narrow frames; targets are looked up by binary
search on a (stock, day) key (``targets.target_arrays``) instead of joins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from atft.data.cross_section import (
    beta_features,
    date_grid,
    finite,
    market_daily,
    sector_features,
    zscore_grid,
)
from atft.data.features import PER_STOCK_GROUPS, daily_inputs, macd_signal_features
from atft.data.targets import target_arrays, target_names

CS_METHODS = ("zscore", "rank")
# raw (unnormalised) features the market and sector groups are computed from
SECTOR_INPUTS = ("returns_1d", "returns_5d", "returns_20d", "realized_vol_20d")
MARKET_INPUTS = ("ma_gap_20d",)


@dataclass
class PanelKeys:
    """Where each row of a panel sorted by ``Code, Date`` sits on the dense date x stock grid."""

    day: np.ndarray  # [rows] int64: position of the row's date among the panel's sorted distinct dates
    code: np.ndarray  # [rows] int64: position of the row's stock among the sorted codes
    shape: tuple[int, int]  # (dates, stocks)


def panel_keys(frame: pl.DataFrame) -> PanelKeys:
    """Grid positions of the rows of ``frame`` (``Code, Date``, sorted by them)."""
    new_code = (pl.col("Code") != pl.col("Code").shift(1)).fill_null(True).cast(pl.Int64)
    keys = frame.select((pl.col("Date").rank("dense").cast(pl.Int64) - 1).alias("day"),
                        (new_code.cum_sum() - 1).alias("code"))
    day, code = keys["day"].to_numpy(), keys["code"].to_numpy()
    return PanelKeys(day, code, (int(day.max()) + 1, int(code.max()) + 1))


def with_stock_index(frame: pl.DataFrame, keys: PanelKeys) -> pl.DataFrame:
    """``Code`` replaced by the stock's position, flagged sorted: the same ``over("Code")`` partition,
    without hashing strings in every window expression (2-3x faster)."""
    return frame.with_columns(pl.Series("Code", keys.code).set_sorted())


class Normaliser:
    """Per-date cross-sectional normalisation of one raw feature column (``cs_normalize``'s numbers).

    Args:
        keys: the panel's grid positions. sigma: winsorisation width. method: ``zscore`` or ``rank``.
    """

    def __init__(self, keys: PanelKeys, sigma: float, method: str):
        if method not in CS_METHODS:
            raise ValueError(f"data.build.cs_method={method!r}: expected 'zscore' or 'rank'")
        self.keys, self.sigma, self.method = keys, sigma, method

    def __call__(self, values: pl.Series) -> pl.Series:
        """Raw float64 column ``[rows]`` -> normalised float32 column (null stays null)."""
        k = self.keys
        if self.method == "rank":
            ranks = pl.DataFrame([pl.Series("_d", k.day), values])
            values = ranks.select(pl.col(values.name).rank("average").over("_d").cast(pl.Float64)).to_series()
        grid = date_grid(values.to_numpy(), k.day, k.code, k.shape)                  # [D, N]
        z = zscore_grid(grid, self.sigma, clip=self.method == "zscore")[k.day, k.code]  # [rows]
        return pl.Series(values.name, z.astype(np.float32), nan_to_null=True)


def finite_columns(lf: pl.LazyFrame, exprs: dict[str, pl.Expr], keep: tuple[str, ...] = ()) -> pl.LazyFrame:
    """``finite(expr)`` for each named expression, the expression evaluated once (``finite`` inline
    evaluates its window expression twice)."""
    return lf.select(*keep, *[e.alias(n) for n, e in exprs.items()]).select(
        *keep, *[finite(pl.col(n)).alias(n) for n in exprs])


def _per_stock(lf: pl.LazyFrame, group: str) -> pl.DataFrame:
    """Raw float64 columns of one per-stock group (``compute_features``'s expressions)."""
    frame = finite_columns(lf, PER_STOCK_GROUPS[group](), ("Code",))
    if group == "oscillators":  # the signal line is an EMA of the finished macd column
        signal = macd_signal_features()
        frame = frame.with_columns(*[e.alias(n) for n, e in signal.items()])
        frame = frame.with_columns(*[finite(pl.col(n)).alias(n) for n in signal])
    return frame.drop("Code").collect()


def assemble(base: pl.DataFrame, jump_clip: float, horizons: list[int], cs_method: str | None = "zscore",
             sigma: float = 5.0) -> tuple[pl.DataFrame, dict[str, list[str]]]:
    """The dataset frame (float32 features and targets) and its groups, from the adjusted panel.

    Args:
        base: ``Code, Date, Open, High, Low, Close, Volume, DollarVolume, Sector, Market``, one row per
            ``(Code, Date)``, sorted by ``Code, Date``.
        jump_clip: one-day moves are clipped at +-this inside features. horizons: target horizons.
        cs_method: per-date normalisation of per-stock features, ``zscore`` or ``rank`` (None: raw
            values). sigma: winsorisation width of ``zscore``.

    Returns:
        ``(frame, groups)`` as ``compute_features`` + ``add_targets`` + ``cs_normalize`` give them: the
        frame ``Code, Date, Sector, Market, <features>, <targets>``, float32, sorted by ``Code, Date``.
    """
    keys = panel_keys(base)
    cs = Normaliser(keys, sigma, cs_method) if cs_method is not None else None
    codes = base["Code"]
    base = with_stock_index(base, keys).with_columns(daily_inputs(jump_clip))
    lf = base.lazy()
    out: dict[str, pl.Series] = {}
    raw: dict[str, pl.Series] = {}
    groups: dict[str, list[str]] = {}

    def store(frame: pl.DataFrame, group: str, normalise: bool) -> None:
        groups[group] = frame.columns
        for name in frame.columns:
            if name in SECTOR_INPUTS + MARKET_INPUTS:
                raw[name] = frame[name]
            out[name] = cs(frame[name]) if cs is not None and normalise else frame[name].cast(pl.Float32)

    for group in PER_STOCK_GROUPS:
        store(_per_stock(lf, group), group, True)
    day = pl.Series(keys.day)
    daily = market_daily(pl.LazyFrame([base["Date"], base["_r"], raw["ma_gap_20d"]])).collect()
    market = daily.drop("Date").select(pl.all().gather(day))  # one value per date, on every row
    store(market, "market", False)
    narrow = pl.LazyFrame([base["Code"], base["_r"], market["mkt_return_1d"]])
    beta, names = beta_features(narrow)
    store(beta.select(names).collect(), "beta", True)
    sector, names = sector_features(pl.LazyFrame([base["Date"], base["Sector"], *[raw[c] for c in SECTOR_INPUTS]]))
    store(sector.select(names).collect(), "sector", True)
    targets = target_arrays(keys.code, keys.day, base["Close"].to_numpy(), horizons)
    for name in target_names(horizons):
        out[name] = pl.Series(name, targets.pop(name).astype(np.float32), nan_to_null=True)
    columns = [codes, *[base[c] for c in ("Date", "Sector", "Market")]]
    return pl.DataFrame(columns + [out[n] for names in groups.values() for n in names] +
                        [out[n] for n in target_names(horizons)]), groups
