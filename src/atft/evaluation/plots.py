"""Report figures: each function draws one matplotlib figure (Agg backend) and returns it as PNG bytes.

A figure whose data is missing still renders, saying what is missing and how to get it, so a report
always holds every plot.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=10, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def lines_plot(series: dict[str, tuple[np.ndarray, np.ndarray]], title: str, ylabel: str,
               empty: str = "no data", logy: bool = False, highlight: str | None = None) -> bytes:
    """One line per name: ``{name: (x, y)}``."""
    fig, ax = plt.subplots(figsize=(10, 4))
    if not series:
        _empty(ax, empty)
    for name, (x, y) in series.items():
        ax.plot(x, y, label=name, lw=2.2 if name == highlight else 1.2, marker="o" if len(x) < 20 else None, ms=3)
    if series:
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        if logy:
            ax.set_yscale("log")
    ax.set_title(title)
    return _png(fig)


def rank_ic_plot(dates: np.ndarray, daily: np.ndarray, title: str) -> bytes:
    """Daily RankIC as bars and its cumulative sum on a second axis."""
    fig, ax = plt.subplots(figsize=(10, 4))
    if len(dates) == 0:
        _empty(ax, "no daily RankIC")
    else:
        ax.bar(dates, np.nan_to_num(daily), color=np.where(np.nan_to_num(daily) >= 0, "tab:blue", "tab:red"))
        ax.set_ylabel("daily RankIC")
        twin = ax.twinx()
        twin.plot(dates, np.nancumsum(daily), color="black", lw=1.5, label="cumulative RankIC")
        twin.set_ylabel("cumulative sum")
        twin.legend(loc="upper left", fontsize=8)
    ax.set_title(title)
    return _png(fig)


def grouped_bars(groups: list[str], values: dict[str, tuple[np.ndarray, np.ndarray]], title: str,
                 ylabel: str, empty: str = "no data") -> bytes:
    """Bars per group (x) and series (colour) with ±2 SE error bars: ``{series: (means, ses)}``."""
    fig, ax = plt.subplots(figsize=(10, 4))
    if not values or not groups:
        _empty(ax, empty)
    else:
        width = 0.8 / len(values)
        x = np.arange(len(groups))
        for i, (name, (mean, se)) in enumerate(values.items()):
            ax.bar(x + i * width, np.nan_to_num(mean), width, yerr=2 * np.nan_to_num(se), capsize=2, label=name)
        ax.set_xticks(x + 0.4 - width / 2, groups)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8, ncol=2)
        ax.grid(alpha=0.3, axis="y")
    ax.set_title(title)
    return _png(fig)


def barh_plot(names: list[str], values: np.ndarray, title: str, empty: str = "no data") -> bytes:
    fig, ax = plt.subplots(figsize=(10, max(3, 0.25 * len(names) + 1)))
    if not names:
        _empty(ax, empty)
    else:
        ax.barh(np.arange(len(names))[::-1], values)
        ax.set_yticks(np.arange(len(names))[::-1], names, fontsize=8)
        ax.grid(alpha=0.3, axis="x")
    ax.set_title(title)
    return _png(fig)
