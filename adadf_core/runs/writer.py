"""Writing a run: ``RunWriter`` stages an epoch's files (metrics, class distributions, attention, tracked samples,
checkpoint, summary, weights) and commits them together through the journal of `runs.folder`; every file is
written atomically (``fileio.atomic_write``) and weights that are not finite are never written.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from adadf_core.config import TrainConfig
from adadf_core.runs.lock import COMMIT_LAST, JOURNAL, STAGING, recover
from adadf_core.runtime.device import environment
from adadf_core.utils import checkpoints
from adadf_core.utils.fileio import atomic_write, read_json, write_json, write_text


# ----------------------------------------------------------------------------------------- writing
BASE_COLUMNS = ["epoch", "lr", "w_ce", "w_kl", "loss", "loss_ce", "loss_kl", "loss_rr", "train_acc",
                "test_acc", "seconds"]
RECORD_FILES = ("metrics.csv", "class_distributions.npy", "attention_by_class.csv", "tracked.npz",
                "summary.json", "best_model.pt", "confusion.npy", "confusion_best.npy", "features.npz",
                "last_model.safetensors", "best_model.safetensors")


BEST_IS_LAST = "last epoch, also the best epoch"    # the header of weights that are both


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        with _space_guard(target, source.stat().st_size):
            shutil.copyfile(source, target)


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


class DiskFullError(OSError):
    """No space left while writing a run's file."""


def _space_guard(path: Path, nbytes: Optional[int] = None):
    """Context: an ENOSPC while writing ``path`` becomes a ``DiskFullError`` naming the file and sizes."""

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
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def _metrics_frame(rows: list[dict]):
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
            "last_acc": last.get("final_test_acc", last.get("test_acc")), "last_epoch": last.get("epoch"),
            "last_acc_note": ("the whole test split after the last epoch; the per-epoch curve and best_acc are "
                              f"on a stratified part of it, {cfg.curve_test_samples} images (curve_test_samples)")
            if "final_test_acc" in last else "the last epoch's test accuracy",
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
                    finished: bool, summary: dict, final: Optional[dict] = None) -> None:
        """One epoch's files, staged and moved in together (``commit_epoch``): the confusion matrix, the best
        epoch's weights and confusion, the last epoch's test features, the records, a finished run's lean
        weights (safetensors), then the checkpoint (``state``) and the summary. ``final`` (the whole test
        split after the last epoch, when the curve is on a part of it) gives the last confusion and features."""
        epoch = state["epoch"]
        self.begin_epoch()
        self.array("confusion.npy", (final or ev)["confusion"])
        if best:
            self.torch_file("best_model.pt", {"model": weights, "epoch": epoch, "acc": ev["acc"]})
            self.array("confusion_best.npy", ev["confusion"])
        if finished:
            last = final or ev
            self.arrays("features.npz", {"features": last["features"], "labels": last["labels"],
                                         "preds": last["preds"]})
        self.records(history, tracked_info)
        if finished:
            self.finish(weights, history["best"]["epoch"] == epoch, {"config": state["config"], "epoch": epoch})
        self.torch_file("checkpoint.pt", state)
        self.json("summary.json", summary)
        self.commit_epoch()

    def begin_epoch(self) -> None:
        stage = self.path / STAGING
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        self.target = stage

    def commit_epoch(self) -> None:
        """Journal the staged files, move them in (checkpoint and summary last), delete what the epoch made
        obsolete, drop the journal."""
        names = sorted(p.name for p in self.target.iterdir())
        names = [n for n in names if n not in COMMIT_LAST] + [n for n in COMMIT_LAST if n in names]
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
            best = checkpoints.load(staged if staged.exists() else self.path / "best_model.pt", "best-epoch weights")["model"]
        staged.unlink(missing_ok=True)
        self.weights("last_model.safetensors", state, dict(meta, weights=BEST_IS_LAST if best_is_last else "last epoch"))
        if best_is_last:
            _link_or_copy(self.target / "last_model.safetensors", self.target / "best_model.safetensors")
        else:
            self.weights("best_model.safetensors", best, dict(meta, weights="best epoch"))
        self._obsolete = ["best_model.pt"]

    def weights(self, name: str, state: dict, meta: dict) -> None:
        """A safetensors file (``meta`` as JSON under "adadf" in its header), readable like the other files."""
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
        with _space_guard(self.target / name, _nbytes(obj)):
            checkpoints.save(self.target / name, obj)

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
            self.text("attention_by_class.csv", pd.DataFrame(history["attention_rows"]).to_csv(index=False))
        if tracked_info is not None and history["tracked"]:
            arrays = dict(tracked_info)
            for key in history["tracked"][0]:
                arrays[key] = np.stack([rec[key] for rec in history["tracked"]])
            self.arrays("tracked.npz", arrays)
