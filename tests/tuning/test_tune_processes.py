"""Processes: a SIGKILLed tuning process leaves a FAIL trial and the rerun completes the study; two
processes share one study on a real PostgreSQL server."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import optuna
import polars as pl
import pytest
from optuna.trial import TrialState
from tune_helpers import cli_command, cli_env, run_cli, tiny, write_space

pytestmark = pytest.mark.slow


def _tune_args(market: Path, folder: Path, out: Path, trials: int, *extra: str) -> list[str]:
    return ["tune", "--data-path", str(market), "--trials", str(trials), "--space", str(write_space(folder)),
            "--out", str(out), *extra, *tiny(folder)]


def _wait_for(predicate, proc: subprocess.Popen, seconds: float = 300.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def test_sigkill_mid_trial_then_rerun_completes_with_the_trial_failed(tmp_path, market):
    out = tmp_path / "out"
    args = _tune_args(market, tmp_path, out, 2, "train.trainer.max_epochs=3")
    url = f"sqlite:///{out / 'study.db'}"

    def second_trial_running() -> bool:
        if not (out / "study.db").is_file():
            return False
        try:
            trials = optuna.load_study(study_name="atft", storage=url).get_trials(deepcopy=False)
        except Exception:  # noqa: BLE001 - the study is being created
            return False
        return any(t.number == 1 and t.state == TrialState.RUNNING and "pid" in t.user_attrs for t in trials)

    proc = subprocess.Popen(cli_command(*args), cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(second_trial_running, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    killed = optuna.load_study(study_name="atft", storage=url).trials[1]
    assert killed.state == TrialState.RUNNING and killed.user_attrs["pid"] == proc.pid

    rerun = run_cli(*args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "no longer exists: marked FAIL" in rerun.stdout
    trials = optuna.load_study(study_name="atft", storage=url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE,
                                         TrialState.COMPLETE]
    frame = pl.read_parquet(out / "trials.parquet")
    assert frame["state"].to_list() == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert frame["value"][1] is None


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server on a free port (as the ``postgres`` user when the tests run as root)."""
    bindir = _postgres_bin()
    if bindir is None:
        reason = "no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the shared-study test: {reason}")
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="atft_pg_"))  # under /tmp: the postgres user can reach it
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    port, data = _free_port(), root / "data"
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                    "--no-sync"], check=True, capture_output=True)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-o",
                    options, "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_two_processes_share_one_postgres_study(tmp_path, market, postgres_url):
    asked = {"a": 2, "b": 3}
    procs = {name: subprocess.Popen(cli_command(*_tune_args(market, tmp_path, tmp_path / name, n, "--storage",
                                                            postgres_url, "--study", "shared")),
                                    cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
             for name, n in asked.items()}
    for proc in procs.values():
        output = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, output[-3000:]
    trials = optuna.load_study(study_name="shared", storage=postgres_url.replace(
        "postgresql://", "postgresql+psycopg2://")).trials
    assert sorted(t.number for t in trials) == list(range(sum(asked.values())))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    by_pid = {pid: sum(t.user_attrs["pid"] == pid for t in trials) for pid in {t.user_attrs["pid"] for t in trials}}
    assert sorted(by_pid.values()) == sorted(asked.values())  # each process ran what it was asked for
    assert {p.pid for p in procs.values()} == set(by_pid)
