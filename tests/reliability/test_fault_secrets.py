"""Row 4: the J-Quants key (and any value of ./.env) is never written: run and build folders, logs,
TensorBoard events, checkpoints, reports and error lines are searched for a sentinel key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests
import responses

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))

from fault_helpers import one_error_line, overrides, write_dataset  # noqa: E402
from test_dataset_jquants import BASE, END, KEY, START, api  # noqa: E402,F401 - `api`: the recorded API

OTHER = "dotenv-only-secret-7f3a9c"  # a second secret that exists only in ./.env


def _files_with(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def _build(cli, tmp_path) -> int:
    return cli("dataset", "build", "--source", "jquants", "--start", START, "--end", END, "--out",
               tmp_path / "build" / "jq.parquet", f"data.build.cache_dir={tmp_path / 'build' / 'cache'}")[0]


@pytest.mark.usefixtures("api")
def test_key_never_written_by_build_train_evaluate_report(tmp_path, monkeypatch, cli, capsys):
    (tmp_path / ".env").write_text(f"JQUANTS_API_KEY={KEY}\nOTHER_SETTING={OTHER}\n")
    assert _build(cli, tmp_path) == 0  # the key came from .env and reached the (recorded) API
    monkeypatch.setenv("JQUANTS_API_KEY", KEY)
    data = write_dataset(tmp_path / "data" / "ml.parquet")
    run = tmp_path / "run"
    # a config that interpolates the key (a user's own key for some other use) must not leak it either
    code, _ = cli("train", *overrides(data, run), "+data.build.api_key=${oc.env:JQUANTS_API_KEY}",
                  f"+notes={OTHER}")
    assert code == 0
    assert cli("evaluate", "--run", run)[0] == 0
    assert cli("report", run)[0] == 0
    assert (run / "config.yaml").read_text().count("***") == 2
    assert any((run / "tensorboard").rglob("events.*"))
    for secret in (KEY, OTHER):
        assert _files_with(tmp_path, secret) == [str(tmp_path / ".env")]  # only where the user put it
    out = capsys.readouterr()
    assert KEY not in out.out + out.err and OTHER not in out.out + out.err


@pytest.mark.usefixtures("api")
def test_key_not_in_an_error_line(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("JQUANTS_API_KEY", KEY)
    api_error = requests.ConnectionError(f"connection reset while sending x-api-key: {KEY}")
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, f"{BASE}/equities/bars/daily", body=api_error)
        code, err = cli("dataset", "build", "--source", "jquants", "--start", START, "--end", END, "--out",
                        tmp_path / "jq.parquet", f"data.build.cache_dir={tmp_path / 'cache'}")
    line = one_error_line(err)
    assert code == 2 and "J-Quants request failed" in line and "***" in line and KEY not in line
