"""Opening a run folder for training: check it can be one, lock it, and decide fresh / resume / done (a finished
run is never overwritten; with several processes rank 0 decides and tells the others).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from adadf_core.config import config_differences, TrainConfig
from adadf_core.runs.lock import recover, RunExistsError, RunLock
from adadf_core.runs.reader import is_finished, Run
from adadf_core.utils.fileio import clean_stale_temporaries


def check_run_dir(cfg: TrainConfig, run_dir: Path) -> tuple[str, Optional["Run"]]:
    """Decide what to do with ``run_dir``: ("fresh" | "resume" | "done", Run or None). Files whose names
    start with a dot (the lock, temporaries, the staging folder) are bookkeeping and do not count."""
    if not run_dir.exists() or not any(not p.name.startswith(".") for p in run_dir.iterdir()):
        if cfg.resume:
            raise RunExistsError(f"--resume: {run_dir} holds no run (no checkpoint.pt): nothing to resume; "
                                 "check --run-dir, or drop --resume to start a new run")
        return "fresh", None
    if not (run_dir / "config.json").is_file():
        raise RunExistsError(f"{run_dir} is not empty and is not a run folder (no config.json); "
                             "refusing to write into it: choose another run_dir")
    if is_finished(run_dir):
        if not (cfg.reuse or cfg.resume):
            raise RunExistsError(f"{run_dir} already holds a finished run; pass reuse=True "
                                 "(CLI: --set reuse=true) to load it, or choose another run_dir")
        run = Run(run_dir)
        diff = config_differences(run.config, cfg)
        if diff:
            raise RunExistsError(f"{run_dir} holds a finished run with a different config "
                                 f"({'; '.join(diff)}); choose another run_dir")
        return "done", run
    if (run_dir / "checkpoint.pt").is_file():
        if not cfg.resume:
            raise RunExistsError(f"{run_dir} holds an unfinished run (checkpoint.pt); pass resume=True "
                                 "(CLI: --resume) to continue it, or delete the folder")
        return "resume", None
    if cfg.resume:
        raise RunExistsError(f"--resume: {run_dir} has no checkpoint.pt (the run died before its first "
                             "epoch ended): nothing to resume; drop --resume to start it again")
    return "fresh", None   # a run that died before its first checkpoint: start over


def open_run_dir(cfg: TrainConfig) -> tuple[Path, RunLock]:
    """Check that ``cfg.run_dir`` can be a run folder and lock it: a path that is a file, a folder that
    cannot be written, a folder another run holds all fail here, before any data or model is loaded. Then
    finish or drop an interrupted epoch write and remove temporaries of dead processes."""
    run_dir = Path(cfg.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunExistsError(f"run_dir {run_dir} is a file, not a folder: choose another run_dir")
    if cfg.resume and not run_dir.is_dir():
        raise RunExistsError(f"--resume: {run_dir} does not exist: nothing to resume; check --run-dir, or "
                             "drop --resume to start a new run")
    try:
        created = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir, created=created)
        lock.acquire()
    except (PermissionError, NotADirectoryError, FileNotFoundError, OSError) as error:
        if isinstance(error, RunExistsError):
            raise
        raise RunExistsError(f"cannot write to run_dir {run_dir}: {error.strerror or error}; choose a "
                             "--run-dir you can write to") from None
    recover(run_dir)
    clean_stale_temporaries(run_dir)
    return run_dir, lock


class _NoLock:
    """What a process other than rank 0 holds instead of the folder lock (several processes)."""

    def release(self) -> None:
        pass


def open_run(cfg: TrainConfig, d) -> tuple[Path, Any, str]:
    """``open_run_dir`` and ``check_run_dir`` for a run of one or more processes (``distributed.Dist`` d):
    rank 0 locks the folder and decides "fresh" / "resume" / "done"; every process learns the decision,
    or fails with rank 0's error. Returns (run_dir, lock, action); only rank 0 ever writes the folder."""
    lock, action, error = _NoLock(), None, None
    if d.is_main:
        try:
            run_dir, lock = open_run_dir(cfg)
            action = check_run_dir(cfg, run_dir)[0]
        except Exception as exc:          # told to every other process, then raised
            lock.release()
            if not d.active:
                raise
            error = exc
    if not d.active:
        return run_dir, lock, action
    action, message = d.broadcast_object((action, None if error is None else str(error)))
    if error is not None:
        raise error
    if message is not None:
        raise RunExistsError(f"rank 0 could not open the run folder: {message}")
    return Path(cfg.run_dir), lock, action
