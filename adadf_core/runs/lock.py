"""The run folder's lock and its epoch-commit journal.

`RunLock` is an exclusive OS lock on ``<run_dir>/.lock`` held while a run writes the folder. An epoch's files are
written into ``.staging/``, then a journal (``.commit.json``) lists them and they are moved in, the checkpoint and
the summary last; `recover` finishes a journalled commit or drops an unjournalled staging folder, so a reader
sees one epoch, never a mix.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

from adadf_core.utils.fileio import read_json


class RunExistsError(FileExistsError):
    """The run folder already holds a finished run, or an unfinished one and resume was not asked."""


class RunLockedError(RunExistsError):
    """Another process holds the run folder's lock."""


class RunLock:
    """An exclusive OS lock (``fcntl.flock``) on ``<run_dir>/.lock``, held while a run writes the folder.
    The OS drops it when the process ends, however it ends, so a stale lock file never blocks anyone."""

    def __init__(self, run_dir: str | Path, created: bool = False):
        self.path = Path(run_dir) / ".lock"
        self.created = created        # this run made the folder: released with nothing in it, it goes again
        self._fh = None

    def acquire(self, blocking_error: bool = True) -> bool:
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            if not blocking_error:
                return False
            raise RunLockedError(f"{self.path.parent} is being written by another training process "
                                 f"({holder}); wait for it to finish or choose another run_dir") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)[:200]}")
        fh.flush()
        self._fh = fh
        return True

    def release(self) -> None:
        """Unlock; a folder this run created that still holds only bookkeeping (a run that failed before
        writing anything) is removed, so a failed ``adadf train`` leaves no empty folder behind."""
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
            folder = self.path.parent
            if self.created and not any(not p.name.startswith(".") for p in folder.iterdir()):
                shutil.rmtree(folder, ignore_errors=True)

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


STAGING, JOURNAL = ".staging", ".commit.json"
# the order the staged files are moved in: the checkpoint and the summary last
COMMIT_LAST = ("checkpoint.pt", "summary.json")


def recover(run_dir: str | Path) -> Optional[str]:
    """Bring a run folder to one consistent epoch after an interrupted write: a commit whose journal was
    written is rolled forward (its remaining files moved in); a staged epoch without a journal is dropped.
    Returns what was done, or None. Call it only while holding the folder's lock."""
    run_dir = Path(run_dir)
    stage, journal = run_dir / STAGING, run_dir / JOURNAL
    done = None
    if journal.is_file():
        entry = read_json(journal, "commit journal")
        for name in entry["files"]:
            if (stage / name).exists():
                os.replace(stage / name, run_dir / name)
        for name in entry.get("delete", []):
            (run_dir / name).unlink(missing_ok=True)
        journal.unlink()
        done = "completed an interrupted epoch commit"
    if stage.exists():
        shutil.rmtree(stage)
        done = done or "dropped an epoch that was interrupted while being written"
    return done
