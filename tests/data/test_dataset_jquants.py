"""J-Quants source end to end through the real ``jquants-api-client``, HTTP served by ``responses``.

The recorded-format payloads follow the v2 API the installed client calls: ``/equities/bars/daily``
(one request per calendar day, ``pagination_key`` for further pages) and ``/equities/master`` (by
date: a stock is listed with the labels it had that day, and not at all after its delisting).
"""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from urllib.parse import parse_qs, urlparse

import numpy as np
import polars as pl
import pytest
import responses
import torch

from atft.cli import main
from atft.config import load_config
from atft.data.build import build_dataset
from atft.data.panel import load_panel
from atft.graph.day_graph import DayGraphBuilder

BASE = "https://api.jquants.com/v2"
KEY = "test-key-not-a-secret-0123"
CODES = {"72030": ("輸送用機器", "プライム"), "67580": ("電気機器", "プライム"), "99840": ("情報・通信業", "グロース"),
         "65010": ("電気機器", "スタンダード")}
START, END = date(2024, 1, 1), date(2024, 3, 29)
LEAVER, DELISTED = "65010", date(2024, 2, 29)  # last trading day; no longer listed from the next day
MOVER, MOVED = "99840", date(2024, 2, 1)  # moves from グロース to プライム on this day


def _quotes() -> dict[str, list[dict]]:
    """Recorded-format daily bars per ISO date; 67580 has a 1:2 split on 2024-02-15 (AdjFactor 0.5)."""
    rng = np.random.default_rng(0)
    days = [START + timedelta(days=i) for i in range((END - START).days + 1)]
    days = [d for d in days if d.weekday() < 5]
    out: dict[str, list[dict]] = {d.isoformat(): [] for d in days}
    for code in CODES:
        close = 1000 * np.exp(np.cumsum(rng.normal(0, 0.015, len(days))))
        for d, c in zip(days, close):
            split = code == "67580" and d >= date(2024, 2, 15)
            raw = c / 2 if split else c
            vol = float(rng.integers(10_000, 50_000))
            bar = {"Date": d.isoformat(), "Code": code, "O": raw * 0.999, "H": raw * 1.01, "L": raw * 0.99, "C": raw,
                   "UL": "0", "LL": "0", "Vo": vol * (2 if split else 1), "Va": raw * vol * (2 if split else 1),
                   "AdjFactor": 0.5 if (code == "67580" and d == date(2024, 2, 15)) else 1.0,
                   "AdjO": c / 2 * 0.999, "AdjH": c / 2 * 1.01, "AdjL": c / 2 * 0.99, "AdjC": c / 2, "AdjVo": vol * 2}
            if code != "67580":
                bar.update(AdjO=bar["O"], AdjH=bar["H"], AdjL=bar["L"], AdjC=bar["C"], AdjVo=bar["Vo"])
            out[d.isoformat()].append(bar)
    return out


def _listed(code: str, day: date, state: dict) -> bool:
    return not (code == LEAVER and state["leaver_delisted"] and day > DELISTED)


def _master(day: date, state: dict) -> list[dict]:
    """Listed-info as of ``day``: the mover's segment changes on MOVED; the leaver vanishes after DELISTED."""
    rows = []
    for code, (sector, market) in CODES.items():
        if not _listed(code, day, state):
            continue
        market = "プライム" if code == MOVER and day >= MOVED else market
        rows.append({"Date": day.isoformat(), "Code": code, "CoName": f"Co {code}", "CoNameEn": f"Co {code}",
                     "S17": "1", "S17Nm": "x", "S33": "1", "S33Nm": sector, "ScaleCat": "TOPIX Core30",
                     "Mkt": "0111", "MktNm": market, "Mrgn": "1", "MrgnNm": "x", "ProdCat": "011"})
    return rows


class RequestLog(list):
    """Query dicts of the bars requests; ``masters``: dates of the listed-info requests."""

    def __init__(self):
        super().__init__()
        self.masters: list[str] = []
        self.state = {"leaver_delisted": True}


@pytest.fixture()
def api(monkeypatch, tmp_path):
    """Hermetic env (no user config file, no .env) and the mocked API; yields the request log (its ``state``
    attribute switches the leaver's delisting on or off)."""
    for var in ("JQUANTS_API_KEY", "JQUANTS_API_CLIENT_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    quotes, calls = _quotes(), RequestLog()

    def bars(request):
        assert request.headers["x-api-key"] == KEY
        query = {k: v[0] for k, v in parse_qs(urlparse(request.url).query).items()}
        calls.append(query)
        rows = [r for r in quotes.get(query["date"], []) if _listed(r["Code"], date.fromisoformat(r["Date"]), calls.state)]
        if query.get("pagination_key") == "page2":  # second page: the rest, no further key
            return 200, {}, json.dumps({"data": rows[2:]})
        if len(rows) > 2:
            return 200, {}, json.dumps({"data": rows[:2], "pagination_key": "page2"})
        return 200, {}, json.dumps({"data": rows})

    def master(request):
        assert request.headers["x-api-key"] == KEY
        day = parse_qs(urlparse(request.url).query)["date"][0]
        calls.masters.append(day)
        return 200, {}, json.dumps({"data": _master(date.fromisoformat(day.replace("/", "-")), calls.state)})

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.GET, re.compile(f"{BASE}/equities/bars/daily.*"), callback=bars)
        rsps.add_callback(responses.GET, re.compile(f"{BASE}/equities/master.*"), callback=master)
        yield calls


def _cfg(tmp_path):
    return load_config(["data.build.source=jquants", f"data.build.start={START}", f"data.build.end={END}",
                        f"data.build.cache_dir={tmp_path / 'cache'}", f"data.build.out={tmp_path / 'jq.parquet'}"])


def test_jquants_build_through_real_client(api, tmp_path, monkeypatch):
    monkeypatch.setenv("JQUANTS_API_KEY", KEY)
    report = build_dataset(_cfg(tmp_path))
    data = pl.read_parquet(tmp_path / "jq.parquet")
    n_leaver = data.filter(pl.col("Code") == LEAVER).height
    assert report["stocks"] == 4 and data.height == 3 * 65 + n_leaver and 0 < n_leaver < 65
    assert any(c.get("pagination_key") == "page2" for c in api)  # the client followed pagination
    assert dict(data.select("Code", "Sector").unique().iter_rows()) == {k: v[0] for k, v in CODES.items()}
    assert report["adjustment"].startswith("provider adjusted") and report["split_events"] == []
    sony = data.filter(pl.col("Code") == "67580")
    assert sony["target_1d"].abs().max() < 0.1  # the 1:2 split is not a -50% return
    cache = list((tmp_path / "cache").glob("*.parquet"))
    assert len(cache) == 2
    for path in [*cache, *tmp_path.glob("jq.parquet*")]:
        assert KEY.encode() not in path.read_bytes(), path


def test_jquants_labels_as_of_each_date(api, tmp_path, monkeypatch):
    """The leaver keeps the sector and market it had while it traded; the mover's segment changes on the
    day it moved, not before (the old build took every label from the master as of --end)."""
    monkeypatch.setenv("JQUANTS_API_KEY", KEY)
    report = build_dataset(_cfg(tmp_path))
    data = pl.read_parquet(tmp_path / "jq.parquet")
    leaver = data.filter(pl.col("Code") == LEAVER)
    assert leaver["Date"].max() == DELISTED and leaver["Sector"].null_count() == 0
    assert set(leaver["Sector"]) == {"電気機器"} and set(leaver["Market"]) == {"スタンダード"}
    mover = data.filter(pl.col("Code") == MOVER)
    assert set(mover.filter(pl.col("Date") < MOVED)["Market"]) == {"グロース"}
    assert set(mover.filter(pl.col("Date") >= MOVED)["Market"]) == {"プライム"}
    assert len(api.masters) == report["source"]["master_snapshots"] == data["Date"].n_unique()
    assert min(api.masters) == data["Date"].min().isoformat()


def test_jquants_leaver_moves_nothing_before_it_leaves(api, tmp_path, monkeypatch):
    """Leakage: whether the leaver is delisted after DELISTED or keeps trading moves no feature and no
    day-graph edge at or before DELISTED."""
    monkeypatch.setenv("JQUANTS_API_KEY", KEY)
    built = {}
    for delisted in (True, False):
        api.state["leaver_delisted"] = delisted
        cfg = load_config(["data.build.source=jquants", f"data.build.start={START}", f"data.build.end={END}",
                           f"data.build.cache_dir={tmp_path / f'cache{delisted}'}",
                           f"data.build.out={tmp_path / f'jq{delisted}.parquet'}",
                           "data.features.leakage_screen_max_abs_ic=0", "data.scaling.method=none"])  # 4 stocks
        build_dataset(cfg)
        panel = load_panel(tmp_path / f"jq{delisted}.parquet", cfg.data)
        graphs = DayGraphBuilder(panel.returns, panel.M & np.isfinite(panel.returns), panel.sector_id,
                                 panel.market_id, window=20, k=3)
        past = pl.read_parquet(tmp_path / f"jq{delisted}.parquet").filter(pl.col("Date") <= DELISTED)
        past = past.select(pl.exclude("^target_.*$"))  # targets at t look ahead by definition
        days = np.flatnonzero(panel.dates <= np.datetime64(DELISTED))
        built[delisted] = past, [graphs.graph(d, np.flatnonzero(panel.M[d])) for d in days]
    (a, graphs_a), (b, graphs_b) = built[True], built[False]
    assert a.equals(b)  # every feature, label and key at <= DELISTED
    assert len(graphs_a) == len(graphs_b) > 20
    for (ei_a, attr_a), (ei_b, attr_b) in zip(graphs_a, graphs_b):
        assert torch.equal(ei_a, ei_b) and torch.equal(attr_a, attr_b)
    assert any(bool((attr[:, 1] > 0).any()) for _, attr in graphs_a[20:])  # same-sector edges do exist


def test_jquants_reads_cache_without_key_or_network(api, tmp_path, monkeypatch):
    monkeypatch.setenv("JQUANTS_API_KEY", KEY)
    build_dataset(_cfg(tmp_path))
    n_calls = len(api)
    monkeypatch.delenv("JQUANTS_API_KEY")
    report = build_dataset(_cfg(tmp_path))
    assert len(api) == n_calls and report["source"]["from_cache"] is True


def test_jquants_key_from_dotenv(api, tmp_path):
    (tmp_path / ".env").write_text(f"JQUANTS_API_KEY={KEY}\n")
    assert build_dataset(_cfg(tmp_path))["stocks"] == 4


def test_jquants_missing_key_is_one_line_error(api, tmp_path, capsys):
    rc = main(["dataset", "build", "--source", "jquants", "--start", str(START), "--end", str(END),
               "--out", str(tmp_path / "jq.parquet"), f"data.build.cache_dir={tmp_path / 'cache'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "JQUANTS_API_KEY" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "jq.parquet").exists()
