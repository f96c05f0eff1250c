"""Where a study lives: an embedded SQLite file by default, any SQLAlchemy URL (PostgreSQL) to share one.

A trial whose process died is marked FAIL, never counted as a result, in two ways:

- **heartbeat** (Optuna's): every running trial writes a heartbeat every ``search.heartbeat_interval``
  seconds; any process that starts a trial fails the RUNNING trials silent for ``search.grace_period``
  seconds. This covers processes on other machines.
- **dead local process**: each trial records its host and process id; when ``atft tune`` starts, the
  RUNNING trials of this host whose process no longer exists are failed at once, so rerunning the
  command after a crash does not wait for the grace period.
"""

from __future__ import annotations

import logging
import os
import random
import re
import socket
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from atft.errors import InputError

log = logging.getLogger("atft.tuning")


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def normalise_url(url: str) -> str:
    """``postgresql://`` -> ``postgresql+psycopg2://``: the driver we ship (SQLAlchemy 2.1 defaults to psycopg 3)."""
    return "postgresql+psycopg2://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


def mask_url(url: str) -> str:
    """The URL with its password hidden (for logs, errors and tune.json)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _engine(url: str):
    import sqlalchemy

    try:
        return sqlalchemy.create_engine(normalise_url(url))
    except Exception as exc:  # noqa: BLE001 - unknown dialect, missing driver, malformed URL
        raise InputError(f"--storage {mask_url(url)} is not a usable SQLAlchemy URL: "
                         f"{str(exc).strip().splitlines()[0]}") from None


def existing_space(url: str, study: str) -> str | None:
    """The stored search space of ``study`` at ``url`` (None when there is no such study); writes nothing.

    Raises ``InputError`` when the storage cannot be reached.
    """
    import sqlalchemy

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None  # a new embedded study: the file is created with the study
    engine = _engine(url)
    try:
        with engine.connect():
            pass
        if not sqlalchemy.inspect(engine).has_table("studies"):
            return None
    except Exception as exc:  # noqa: BLE001 - refused connection, bad credentials, unknown database
        raise InputError(f"--storage {mask_url(url)} cannot be reached: "
                         f"{str(exc).strip().splitlines()[0]}") from None
    finally:
        engine.dispose()
    storage = open_storage(url, heartbeat_interval=None, grace_period=None)
    names = {s.study_name for s in storage.get_all_studies()}
    if study not in names:
        return None
    attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(study))
    return attrs.get("space", "")


def open_storage(url: str, heartbeat_interval: int | None, grace_period: int | None, attempts: int = 5):
    """Optuna's ``RDBStorage`` at ``url`` with heartbeats (None: off).

    Retried a few times: processes started together on a fresh database race to create Optuna's tables
    (PostgreSQL answers the loser with a unique violation); a moment later the tables are there.
    """
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(normalise_url(url), heartbeat_interval=heartbeat_interval,
                                              grace_period=grace_period, engine_kwargs={"pool_pre_ping": True})
        except Exception as exc:  # noqa: BLE001 - every connection failure is the user's URL or server
            if attempt == attempts - 1:
                raise InputError(f"--storage {mask_url(url)} cannot be reached: "
                                 f"{str(exc).strip().splitlines()[0]}") from None
            time.sleep(0.5 + random.random())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped is a zombie: dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def mark_owner(trial: optuna.Trial) -> None:
    """Record the host and process running ``trial`` (read by :func:`fail_dead_trials`)."""
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials of this host whose process is gone; their numbers."""
    host, failed = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") == host and pid is not None and not _pid_alive(int(pid)):
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            failed.append(trial.number)
    if failed:
        log.warning("[TUNE] trials %s were RUNNING in a process that no longer exists: marked FAIL", failed)
    return failed
