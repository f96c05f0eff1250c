"""One writer per run folder: an advisory ``fcntl.flock`` on ``<run>/.lock`` held for the run's life.

The kernel releases a ``flock`` when its process exits in any way (normal end, exception, SIGKILL), so
a lock can never outlive its owner. The file keeps the owner's pid and start time: a lock file whose
lock is free but names another pid is a stale one left by a killed run; it is taken over and
``stale_message`` says so (the run logs it). A second ``atft train``/``atft tune`` into a folder whose
lock is held is refused with one line.

Usage::

    with RunLock(run_dir, command="train"):
        ...  # write into run_dir
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from atft.errors import InputError

LOCK_NAME = ".lock"


def _holder(path: Path) -> dict:
    """What the lock file says about its last owner (``{}`` if unreadable)."""
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


class RunLock:
    """Exclusive advisory lock on a run folder (a context manager; ``release`` is idempotent).

    Args:
        run_dir: the run folder (created if missing).
        command: what holds it (``train``, ``tune``), written into the lock file and error messages.
    """

    def __init__(self, run_dir: str | Path, command: str = "train"):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.command = command
        self._fd: int | None = None
        self._created = False
        self.stale: dict = {}

    def acquire(self) -> RunLock:
        self._created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            who = _holder(self.path)
            raise InputError(f"run folder {self.run_dir} is in use by another `atft {who.get('command', '?')}` "
                             f"(pid {who.get('pid', '?')}); wait for it to finish or choose another "
                             f"--run-dir") from None
        owner = _holder(self.path)
        self.stale = owner if owner.get("pid") not in (None, os.getpid()) else {}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": self.command, "since": time.time()}).encode(), 0)
        self._fd = fd
        return self

    @property
    def stale_message(self) -> str:
        """A line about the stale lock of a killed run this lock took over ('' if there was none)."""
        if not self.stale:
            return ""
        return (f"run folder {self.run_dir}: stale lock of pid {self.stale['pid']} (`atft "
                f"{self.stale.get('command', '?')}`, no longer running) taken over")

    def release(self) -> None:
        """Free the lock and clear the owner record. The file stays (removing it would race a new owner),
        except in a folder this lock created and nothing else wrote to (a run refused before it began)."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        if self._created and [p.name for p in self.run_dir.iterdir()] == [LOCK_NAME]:
            self.path.unlink()
            self.run_dir.rmdir()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def finished(run_dir: str | Path) -> bool:
    """A run folder whose run ended: ``metrics.json`` (written last by ``atft train``) exists."""
    return (Path(run_dir) / "metrics.json").is_file()


def claim_run_dir(run_dir: str | Path, resume_from: str | None = None, command: str = "train",
                  replace_finished: bool = False) -> RunLock:
    """Lock ``run_dir`` for this run; refuse a finished run's folder unless the run resumes a checkpoint.

    Args:
        replace_finished: a caller that owns the folder and recomputes it (``atft compare`` re-run into
            the same ``--out``) may replace a finished run; a user's ``--run-dir`` may not.

    Returns the held :class:`RunLock` (release it when the run ends, e.g. in ``finally``).
    """
    run_dir = Path(run_dir)
    if finished(run_dir) and not (resume_from or replace_finished):
        raise InputError(f"run folder {run_dir} holds a finished run (metrics.json); choose a new --run-dir, "
                         f"or pass --resume-from {run_dir / 'checkpoints' / 'last.ckpt'} to continue it")
    return RunLock(run_dir, command).acquire()
