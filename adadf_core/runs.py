"""The run-folder contract (layout: docs/ARCHITECTURE.md): how a run folder is named, written and read.

Naming. One rule names every run folder (the CLI's default ``run_dir``, the studies and the notebooks)::

    <runs_root>/<method>-seed<seed>                       the data set's preset configuration
    <runs_root>/<method>-<tag><value>-...-seed<seed>      every setting that differs from the preset

``run_dir_for(runs_root, method, seed, **overrides)`` formats the name from the overrides it is given;
``run_dir_for_config(runs_root, cfg)`` computes those overrides as the fields of ``cfg`` that differ from
``make_config(cfg.dataset)`` (machinery such as device, threads or progress bars is ignored). Tags are
short names for the common fields (``NAME_TAGS``: ``t`` threshold, ``ehat`` epoch threshold, ``lmin``
lambda_min, ``noise`` noise rate, ``ep`` epochs, ``ntr``/``nte`` max train/test samples, ``img`` image
size, ...); other fields use their own name. Overrides are sorted by tag, floats are written with ``%g``,
file paths by their stem. Example: ``adadf-lmin0.1-seed0``, ``adadf-noise0.2-seed1``.

Writing. ``RunWriter`` writes every file of a run atomically (temporary file, then ``os.replace``) through
``fileio.atomic_write``; ``check_run_dir`` decides whether a folder is new, resumable or finished (a
finished run is never overwritten).

Reading::

    run = Run("runs/synthfer/adadf-seed0")
    run.metrics            # pandas DataFrame, one row per finished epoch
    run.summary["best_acc"], run.class_distributions[-1], run.tracked["fused"]
    model = run.load_model(best=True)

Every attribute is loaded lazily; a file the run does not have (for example ``tracked.npz`` for the
baseline) gives ``None``.
"""
from __future__ import annotations

import dataclasses
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .config import MACHINERY_FIELDS, TrainConfig, config_differences, is_resolved, make_config, resolve_config
from .fileio import atomic_write, read_json, write_json, write_text


class NotARunError(FileNotFoundError):
    """The folder is not a run folder."""


class RunExistsError(FileExistsError):
    """The run folder already holds a finished run, or an unfinished one and resume was not asked."""


# ------------------------------------------------------------------------------------------ naming
NAME_TAGS = {
    "threshold": "t", "epoch_threshold": "ehat", "lambda_min": "lmin", "lambda_max": "lmax",
    "rr_ratio": "rr", "noise_rate": "noise", "noise_seed": "nseed", "noise_file": "nfile",
    "epochs": "ep", "batch_size": "bs", "max_train_samples": "ntr", "max_test_samples": "nte",
    "image_size": "img", "recipe": "rcp", "pretrained": "pre", "backbone": "", "profile": "",
    "lr": "lr", "weight_decay": "wd", "lr_gamma": "gamma", "track_samples": "trk",
}
# fields that do not change what a run computes (or are part of the folder name already)
NOT_IN_NAME = set(MACHINERY_FIELDS) | {"dataset", "data_root", "method", "seed"}


def _fmt_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        text = "on" if value else "off"
    elif isinstance(value, float):
        text = format(value, "g")
    elif isinstance(value, int):
        text = str(value)
    elif key in ("noise_file", "pretrained", "data_root"):
        text = Path(str(value)).stem
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._+]", "_", text)


def run_dir_for(runs_root: str | Path, method: str, seed: int, **overrides) -> Path:
    """The folder of one run: ``<runs_root>/<method>[-<tag><value>...]-seed<seed>``.

    ``overrides`` are the settings that differ from the data set's preset (``None`` values are skipped).
    The name is stable: notebooks and the comparison notebook find each other's runs through it.
    """
    if not method or not re.fullmatch(r"[A-Za-z0-9_]+", method):
        raise ValueError(f"method {method!r} is not a valid run-name part")
    parts = []
    for key, value in overrides.items():
        if value is None:
            continue
        tag = NAME_TAGS.get(key, key)
        parts.append(f"{tag}{_fmt_value(key, value)}")
    name = "-".join([method] + sorted(parts) + [f"seed{int(seed)}"])
    return Path(runs_root) / name


def config_overrides(cfg: TrainConfig) -> dict[str, Any]:
    """The fields of ``cfg`` that differ from its data set's preset (after both are resolved), minus
    machinery fields that do not change the result. The profile counts when it is not ``official``."""
    mine = dataclasses.asdict(cfg if is_resolved(cfg) else resolve_config(cfg))
    base = dataclasses.asdict(resolve_config(make_config(cfg.dataset, cfg.profile, method=cfg.method,
                                                         seed=cfg.seed)))
    out = {k: v for k, v in mine.items() if k not in NOT_IN_NAME and k != "profile" and v != base[k]}
    if cfg.profile != "official":
        out["profile"] = cfg.profile
    return out


def run_dir_for_config(runs_root: str | Path, cfg: TrainConfig) -> Path:
    """``run_dir_for`` with the overrides computed from ``cfg`` (see ``config_overrides``)."""
    return run_dir_for(runs_root, cfg.method, cfg.seed, **config_overrides(cfg))


def default_run_dir(cfg: TrainConfig) -> Path:
    """Where a run goes when ``cfg.run_dir`` is None: ``runs/<dataset>/<name by the rule above>``."""
    return run_dir_for_config(Path("runs") / cfg.dataset, cfg)



# ----------------------------------------------------------------------------------------- writing
BASE_COLUMNS = ["epoch", "lr", "w_ce", "w_kl", "loss", "loss_ce", "loss_kl", "loss_rr", "train_acc",
                "test_acc", "seconds"]
RECORD_FILES = ("metrics.csv", "class_distributions.npy", "attention_by_class.csv", "tracked.npz",
                "summary.json", "best_model.pt", "confusion.npy", "confusion_best.npy", "features.npz",
                "last_model.safetensors", "best_model.safetensors")


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


class RunLockedError(RunExistsError):
    """Another process holds the run folder's lock."""


class RunLock:
    """An exclusive OS lock (``fcntl.flock``) on ``<run_dir>/.lock``, held while a run writes the folder.
    The OS drops it when the process ends, however it ends, so a stale lock file never blocks anyone."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / ".lock"
        self._fh = None

    def acquire(self, blocking_error: bool = True) -> bool:
        import fcntl
        import os
        import sys
        import time
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
        if self._fh is not None:
            import fcntl
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


STAGING, JOURNAL = ".staging", ".commit.json"
# the order the staged files are moved in: the checkpoint and the summary last
_COMMIT_LAST = ("checkpoint.pt", "summary.json")


BEST_IS_LAST = "last epoch, also the best epoch"    # the header of weights that are both


def _link_or_copy(source: Path, target: Path) -> None:
    import os
    import shutil
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        with _space_guard(target, source.stat().st_size):
            shutil.copyfile(source, target)


def recover(run_dir: str | Path) -> Optional[str]:
    """Bring a run folder to one consistent epoch after an interrupted write: a commit whose journal was
    written is rolled forward (its remaining files moved in); a staged epoch without a journal is dropped.
    Returns what was done, or None. Call it only while holding the folder's lock."""
    import os
    import shutil
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


def open_run_dir(cfg: TrainConfig) -> tuple[Path, RunLock]:
    """Check that ``cfg.run_dir`` can be a run folder and lock it: a path that is a file, a folder that
    cannot be written, a folder another run holds all fail here, before any data or model is loaded. Then
    finish or drop an interrupted epoch write and remove temporaries of dead processes."""
    from .fileio import clean_stale_temporaries
    run_dir = Path(cfg.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunExistsError(f"run_dir {run_dir} is a file, not a folder: choose another run_dir")
    if cfg.resume and not run_dir.is_dir():
        raise RunExistsError(f"--resume: {run_dir} does not exist: nothing to resume; check --run-dir, or "
                             "drop --resume to start a new run")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir)
        lock.acquire()
    except (PermissionError, NotADirectoryError, FileNotFoundError, OSError) as error:
        if isinstance(error, RunExistsError):
            raise
        raise RunExistsError(f"cannot write to run_dir {run_dir}: {error.strerror or error}; choose a "
                             "--run-dir you can write to") from None
    recover(run_dir)
    clean_stale_temporaries(run_dir)
    return run_dir, lock


def new_history() -> dict:
    """What a run accumulates over its epochs (saved in every checkpoint, read by ``records``)."""
    return {"metrics": [], "class_distributions": [], "attention_rows": [], "tracked": [],
            "best": {}, "per_class_last": None, "seconds": 0.0}


def add_to_history(history: dict, row: dict, record, per_class_acc) -> None:
    """Add a finished epoch: its metrics.csv ``row``, the method's ``EpochRecord`` (D, attention rows,
    tracked samples) and the test split's per-class accuracy."""
    history["seconds"] += row["seconds"]
    history["metrics"].append(row)
    history["per_class_last"] = [float(a) for a in per_class_acc]
    if record.class_distribution is not None:
        history["class_distributions"].append(record.class_distribution)
    history["attention_rows"] += record.attention_rows
    if record.tracked is not None:
        history["tracked"].append(record.tracked)


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


class DiskFullError(OSError):
    """No space left while writing a run's file."""


def _space_guard(path: Path, nbytes: Optional[int] = None):
    """Context: an ENOSPC while writing ``path`` becomes a ``DiskFullError`` naming the file and sizes."""
    import contextlib
    import errno
    import shutil

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            free = shutil.disk_usage(path.parent).free / 2**20
            need = f"needs about {nbytes / 2**20:.0f} MB, " if nbytes else ""
            raise DiskFullError(errno.ENOSPC, f"no space left on device while writing {path} ({need}"
                                f"{free:.0f} MB free); free some space and continue with --resume") from None
    return guard()


def _nbytes(obj) -> int:
    import torch
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def _metrics_frame(rows: list[dict]):
    import pandas as pd
    columns: list[str] = list(BASE_COLUMNS)
    seen = [k for row in rows for k in row]
    columns += [k for k in dict.fromkeys(seen) if k.startswith("acc_") and k not in columns]
    columns += [k for k in dict.fromkeys(seen) if k not in columns]
    return pd.DataFrame(rows, columns=columns)


def make_summary(cfg: TrainConfig, history: dict, class_names, finished: bool) -> dict:
    """The content of ``summary.json`` from the run's history."""
    last = history["metrics"][-1] if history["metrics"] else {}
    best = history["best"]
    return {"finished": bool(finished),
            "best_acc": best.get("acc"), "best_epoch": best.get("epoch"),
            "best_acc_note": "best test accuracy over epochs, as the paper reports",
            "last_acc": last.get("test_acc"), "last_epoch": last.get("epoch"),
            "per_class_acc_last": history.get("per_class_last"),
            "per_class_acc_best": best.get("per_class"),
            "class_names": list(class_names), "method": cfg.method, "dataset": cfg.dataset,
            "profile": cfg.profile, "epochs": cfg.epochs, "seconds": history["seconds"]}


class RunWriter:
    """Writes the files of one run folder, each atomically (``fileio.atomic_write``). An epoch's files are
    written into a staging folder (``begin_epoch``) and moved in together by ``commit_epoch`` through a
    journal, so that after any interruption ``recover`` leaves the folder at one epoch, never a mix."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.target = self.path
        self._obsolete: list[str] = []

    def start_fresh(self) -> None:
        """Create the folder and remove the record files of a run that died before its first checkpoint."""
        self.path.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            (self.path / name).unlink(missing_ok=True)

    def config(self, cfg: TrainConfig, model, train_set, resumed: bool, layout: Optional[dict] = None) -> None:
        """``config.json``: the resolved config and the environment it ran in (``layout``: the processes, the
        BatchNorm mode and the memory format the trainer chose; a resume that would change the BatchNorm mode
        is refused)."""
        from .device import environment
        device = next(model.parameters()).device
        env = dict(environment(device), weights=getattr(model, "pretrained_source", None) or "scratch",
                   weights_sha256=getattr(getattr(model, "load_report", None), "sha256", None),
                   num_classes=int(train_set.num_classes), class_names=list(train_set.class_names),
                   num_train=len(train_set), **(layout or {}))
        if resumed:   # the model was rebuilt without the pretrained file: keep the record
            old = read_json(self.path / "config.json", "run config").get("environment", {})
            if "batchnorm" in old and old["batchnorm"] != env.get("batchnorm", old["batchnorm"]):
                raise ValueError(f"cannot resume {self.path}: it trained with {old['batchnorm']} BatchNorm, this "
                                 f"process would use {env['batchnorm']}; expected the same --sync-bn choice")
            env["weights"] = old.get("weights", cfg.pretrained or "scratch")
            env["weights_sha256"] = old.get("weights_sha256")
        self.json("config.json", {"config": dataclasses.asdict(cfg), "environment": env})

    def write_epoch(self, ev: dict, history: dict, tracked_info, weights: dict, state: dict, best: bool,
                    finished: bool, summary: dict) -> None:
        """One epoch's files, staged and moved in together (``commit_epoch``): the confusion matrix, the best
        epoch's weights and confusion, the last epoch's test features, the records, a finished run's lean
        weights (safetensors), then the checkpoint (``state``) and the summary."""
        epoch = state["epoch"]
        self.begin_epoch()
        self.array("confusion.npy", ev["confusion"])
        if best:
            self.torch_file("best_model.pt", {"model": weights, "epoch": epoch, "acc": ev["acc"]})
            self.array("confusion_best.npy", ev["confusion"])
        if finished:
            self.arrays("features.npz", {"features": ev["features"], "labels": ev["labels"], "preds": ev["preds"]})
        self.records(history, tracked_info)
        if finished:
            self.finish(weights, history["best"]["epoch"] == epoch, {"config": state["config"], "epoch": epoch})
        self.torch_file("checkpoint.pt", state)
        self.json("summary.json", summary)
        self.commit_epoch()

    def begin_epoch(self) -> None:
        import shutil
        stage = self.path / STAGING
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        self.target = stage

    def commit_epoch(self) -> None:
        """Journal the staged files, move them in (checkpoint and summary last), delete what the epoch made
        obsolete, drop the journal."""
        names = sorted(p.name for p in self.target.iterdir())
        names = [n for n in names if n not in _COMMIT_LAST] + [n for n in _COMMIT_LAST if n in names]
        write_json(self.path / JOURNAL, {"files": names, "delete": self._obsolete})
        self.target, self._obsolete = self.path, []
        recover(self.path)

    def finish(self, state: dict, best_is_last: bool, meta: dict) -> None:
        """A finished run keeps its weights as safetensors (``last_model``, ``best_model``; code-free to read,
        ``meta`` in the header) and no optimiser state: the checkpoint and best_model.pt it replaces go.
        When the best epoch is the last one the two names are one file (a hard link; a copy where the file
        system has none), so a study's folder holds each set of weights once."""
        staged = self.target / "best_model.pt"
        best = None
        if not best_is_last:
            from .checkpoints import load
            best = load(staged if staged.exists() else self.path / "best_model.pt", "best-epoch weights")["model"]
        staged.unlink(missing_ok=True)
        self.weights("last_model.safetensors", state, dict(meta, weights=BEST_IS_LAST if best_is_last else "last epoch"))
        if best_is_last:
            _link_or_copy(self.target / "last_model.safetensors", self.target / "best_model.safetensors")
        else:
            self.weights("best_model.safetensors", best, dict(meta, weights="best epoch"))
        self._obsolete = ["best_model.pt"]

    def weights(self, name: str, state: dict, meta: dict) -> None:
        """A safetensors file (``meta`` as JSON under "adadf" in its header), readable like the other files."""
        import os
        from safetensors.torch import save_file
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        path = self.target / name
        with _space_guard(path, _nbytes(tensors)):
            atomic_write(path, lambda tmp: save_file(tensors, str(tmp), {"adadf": json.dumps(meta)}))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(path, 0o666 & ~umask)          # safetensors creates its files owner-only

    def array(self, name: str, array) -> None:
        def write(p):
            with open(p, "wb") as fh:
                np.save(fh, np.asarray(array))
        with _space_guard(self.target / name):
            atomic_write(self.target / name, write)

    def arrays(self, name: str, arrays: dict) -> None:
        def write(p):
            with open(p, "wb") as fh:
                np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
        with _space_guard(self.target / name):
            atomic_write(self.target / name, write)

    def torch_file(self, name: str, obj) -> None:
        """A weights or state file that loads without unpickling arbitrary objects (``checkpoints.save``)."""
        from .checkpoints import save
        with _space_guard(self.target / name, _nbytes(obj)):
            save(self.target / name, obj)

    def json(self, name: str, data) -> None:
        with _space_guard(self.target / name):
            write_json(self.target / name, data)

    def text(self, name: str, text: str) -> None:
        with _space_guard(self.target / name):
            write_text(self.target / name, text)

    def records(self, history: dict, tracked_info: Optional[dict]) -> None:
        """Rewrite metrics.csv and the per-epoch record files from ``history``."""
        self.text("metrics.csv", _metrics_frame(history["metrics"]).to_csv(index=False))
        if history["class_distributions"]:
            self.array("class_distributions.npy", np.stack(history["class_distributions"]).astype(np.float32))
        if history["attention_rows"]:
            import pandas as pd
            self.text("attention_by_class.csv", pd.DataFrame(history["attention_rows"]).to_csv(index=False))
        if tracked_info is not None and history["tracked"]:
            arrays = dict(tracked_info)
            for key in history["tracked"][0]:
                arrays[key] = np.stack([rec[key] for rec in history["tracked"]])
            self.arrays("tracked.npz", arrays)


# ----------------------------------------------------------------------------------------- reading
def is_finished(run_dir: str | Path) -> bool:
    """True when ``run_dir/summary.json`` says finished, or the folder holds a finished run's
    ``last_model.safetensors`` (its summary may be damaged; its lean checkpoint cannot be resumed). Otherwise
    a corrupt or missing summary is an unfinished run: it is resumed from its checkpoint, never overwritten."""
    if (Path(run_dir) / "last_model.safetensors").is_file():
        return True
    try:
        return bool(json.loads((Path(run_dir) / "summary.json").read_text()).get("finished", False))
    except (OSError, ValueError):
        return False


def resumable(run_dir: str | Path) -> bool:
    """True when ``run_dir`` holds an interrupted run: a checkpoint, and not finished."""
    return (Path(run_dir) / "checkpoint.pt").is_file() and not is_finished(run_dir)


class Run:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise NotARunError(f"{self.path} is not a run folder: the folder does not exist")
        if (self.path / JOURNAL).exists() or (self.path / STAGING).exists():
            lock = RunLock(self.path)          # an interrupted epoch write: finish it unless a run is writing
            try:
                if lock.acquire(blocking_error=False):
                    try:
                        recover(self.path)
                    finally:
                        lock.release()
            except OSError:                    # a folder we may only read: read it as it is
                pass
        if not (self.path / "config.json").is_file():
            raise NotARunError(f"{self.path} is not a run folder: it has no config.json "
                               "(expected the layout train.fit writes, see docs/ARCHITECTURE.md)")

    def __repr__(self) -> str:
        state = "finished" if self.finished else f"unfinished, {len(self.metrics)} epoch(s)"
        return f"Run({str(self.path)!r}, {self.config.method}, {self.config.dataset}, {state})"

    def _file(self, name: str) -> Path | None:
        p = self.path / name
        return p if p.is_file() else None

    # --- records -------------------------------------------------------------------------------
    @cached_property
    def config_json(self) -> dict:
        return read_json(self.path / "config.json", "run config")

    @cached_property
    def config(self) -> TrainConfig:
        return TrainConfig.load(self.path / "config.json")

    @property
    def environment(self) -> dict:
        return self.config_json.get("environment", {})

    @property
    def metrics(self):
        import pandas as pd
        p = self._file("metrics.csv")
        return pd.read_csv(p) if p else pd.DataFrame()

    @property
    def summary(self) -> dict:
        p = self._file("summary.json")
        return read_json(p, "run summary") if p else {}

    @property
    def finished(self) -> bool:
        return is_finished(self.path)

    @property
    def class_names(self) -> list[str]:
        names = self.summary.get("class_names") or self.environment.get("class_names")
        return list(names) if names else []

    @property
    def class_distributions(self) -> np.ndarray | None:
        """float32 [E+1, C, C]: [0] the initial D, [e] the D mined after epoch e."""
        p = self._file("class_distributions.npy")
        return np.load(p) if p else None

    @property
    def attention_by_class(self):
        import pandas as pd
        p = self._file("attention_by_class.csv")
        return pd.read_csv(p) if p else None

    def _npz(self, name: str) -> dict | None:
        p = self._file(name)
        if not p:
            return None
        with np.load(p) as z:
            return {k: z[k] for k in z.files}

    @property
    def tracked(self) -> dict | None:
        return self._npz("tracked.npz")

    @property
    def features(self) -> dict | None:
        return self._npz("features.npz")

    @property
    def confusion(self) -> np.ndarray | None:
        p = self._file("confusion.npy")
        return np.load(p) if p else None

    @property
    def confusion_best(self) -> np.ndarray | None:
        p = self._file("confusion_best.npy")
        return np.load(p) if p else None

    # --- model ---------------------------------------------------------------------------------
    def load_model(self, best: bool = False, device="cpu", trust_pickle: bool = False):
        """Rebuild the run's model and load its last-epoch or best-epoch weights: ``last_model`` /
        ``best_model.safetensors`` of a finished run, ``checkpoint.pt`` / ``best_model.pt`` of an unfinished
        one, read without running code from the file (``trust_pickle`` only for trusted legacy files).
        Returns the model in eval mode."""
        from .checkpoints import CheckpointError, load, non_finite
        from .methods import build_model_for
        from .model import load_model_state

        names = ("best_model.safetensors", "best_model.pt") if best else ("last_model.safetensors", "checkpoint.pt")
        p = self._file(names[0]) or self._file(names[1])
        if p is None:
            raise FileNotFoundError(f"{self.path / names[1]} does not exist: the run has no "
                                    f"{'best' if best else 'last-epoch'} weights yet")
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file
            try:
                state = load_file(str(p))
            except Exception as error:          # safetensors raises its own error types
                raise CheckpointError(f"{p} is truncated or not a safetensors file ({error})") from None
        else:
            blob = load(p, "best-epoch weights" if best else "checkpoint", trust_pickle=trust_pickle)
            state = blob["model"] if isinstance(blob, dict) and "model" in blob else blob
        if not isinstance(state, dict):
            raise CheckpointError(f"{p} holds no model weights (found {type(state).__name__})")
        bad = non_finite(state)
        if bad:
            raise CheckpointError(f"{p} holds NaN or infinite weights ({', '.join(bad[:3])}"
                                  f"{', ...' if len(bad) > 3 else ''}): it is not a usable model")
        num_classes = len(self.class_names) or int(self.environment.get("num_classes", 7))
        model = build_model_for(self.config, num_classes, pretrained=False).to(device)
        load_model_state(model, state, p)
        return model.eval()


def list_runs(root: str | Path) -> list[Run]:
    """Every run folder below ``root`` (recursively), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [Run(p.parent) for p in sorted(root.rglob("config.json")) if (p.parent / "metrics.csv").exists()
            or (p.parent / "checkpoint.pt").exists() or (p.parent / "last_model.safetensors").exists()]
