"""J-Quants source end to end through the real ``jquants-api-client``, HTTP served by ``responses``.

The recorded-format payloads follow the v2 API the installed client calls: ``/equities/bars/daily``
(one request per calendar day, ``pagination_key`` for further pages) and ``/equities/master``.
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

from atft.cli import main
from atft.config import load_config
from atft.data.build import build_dataset

BASE = "https://api.jquants.com/v2"
KEY = "test-key-not-a-secret-0123"
CODES = {"72030": ("輸送用機器", "プライム"), "67580": ("電気機器", "プライム"), "99840": ("情報・通信業", "グロース")}
START, END = date(2024, 1, 1), date(2024, 3, 29)


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


def _master() -> list[dict]:
    return [{"Date": END.isoformat(), "Code": code, "CoName": f"Co {code}", "CoNameEn": f"Co {code}", "S17": "1",
             "S17Nm": "x", "S33": "1", "S33Nm": sector, "ScaleCat": "TOPIX Core30", "Mkt": "0111", "MktNm": market,
             "Mrgn": "1", "MrgnNm": "x", "ProdCat": "011"} for code, (sector, market) in CODES.items()]


@pytest.fixture()
def api(monkeypatch, tmp_path):
    """Hermetic env (no user config file, no .env) and the mocked API; yields the request log."""
    for var in ("JQUANTS_API_KEY", "JQUANTS_API_CLIENT_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    quotes, calls = _quotes(), []

    def bars(request):
        assert request.headers["x-api-key"] == KEY
        query = {k: v[0] for k, v in parse_qs(urlparse(request.url).query).items()}
        calls.append(query)
        rows = quotes.get(query["date"], [])
        if query.get("pagination_key") == "page2":  # second page: the rest, no further key
            return 200, {}, json.dumps({"data": rows[2:]})
        if len(rows) > 2:
            return 200, {}, json.dumps({"data": rows[:2], "pagination_key": "page2"})
        return 200, {}, json.dumps({"data": rows})

    def master(request):
        assert request.headers["x-api-key"] == KEY
        return 200, {}, json.dumps({"data": _master()})

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
    assert report["stocks"] == 3 and data.height == 3 * 65
    assert any(c.get("pagination_key") == "page2" for c in api)  # the client followed pagination
    assert dict(data.select("Code", "Sector").unique().iter_rows()) == {k: v[0] for k, v in CODES.items()}
    assert set(data["Market"]) == {"プライム", "グロース"}
    assert report["adjustment"].startswith("provider adjusted") and report["split_events"] == []
    sony = data.filter(pl.col("Code") == "67580")
    assert sony["target_1d"].abs().max() < 0.1  # the 1:2 split is not a -50% return
    cache = list((tmp_path / "cache").glob("*.parquet"))
    assert len(cache) == 2
    for path in [*cache, *tmp_path.glob("jq.parquet*")]:
        assert KEY.encode() not in path.read_bytes(), path


def test_jquants_reads_cache_without_key_or_network(api, tmp_path, monkeypatch):
    monkeypatch.setenv("JQUANTS_API_KEY", KEY)
    build_dataset(_cfg(tmp_path))
    n_calls = len(api)
    monkeypatch.delenv("JQUANTS_API_KEY")
    report = build_dataset(_cfg(tmp_path))
    assert len(api) == n_calls and report["source"]["from_cache"] is True


def test_jquants_key_from_dotenv(api, tmp_path):
    (tmp_path / ".env").write_text(f"JQUANTS_API_KEY={KEY}\n")
    assert build_dataset(_cfg(tmp_path))["stocks"] == 3


def test_jquants_missing_key_is_one_line_error(api, tmp_path, capsys):
    rc = main(["dataset", "build", "--source", "jquants", "--start", str(START), "--end", str(END),
               "--out", str(tmp_path / "jq.parquet"), f"data.build.cache_dir={tmp_path / 'cache'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "JQUANTS_API_KEY" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "jq.parquet").exists()
