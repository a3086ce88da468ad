"""Reading a run folder::

    run = Run("runs/synthfer/adadf-seed0")
    run.metrics            # pandas DataFrame, one row per finished epoch
    run.summary["best_acc"], run.class_distributions[-1], run.tracked["fused"]
    model = run.load_model(best=True)

Every attribute is loaded lazily; a file the run does not have (for example ``tracked.npz`` for the
baseline) gives ``None``.
"""
from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.torch import load_file

from adadf_core.config import TrainConfig
from adadf_core.methods import build_model_for
from adadf_core.models.networks import load_model_state
from adadf_core.runs.lock import JOURNAL, STAGING, recover, RunLock
from adadf_core.utils.checkpoints import CheckpointError, load, non_finite
from adadf_core.utils.fileio import read_json


class NotARunError(FileNotFoundError):
    """The folder is not a run folder."""


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
        names = ("best_model.safetensors", "best_model.pt") if best else ("last_model.safetensors", "checkpoint.pt")
        p = self._file(names[0]) or self._file(names[1])
        if p is None:
            raise FileNotFoundError(f"{self.path / names[1]} does not exist: the run has no "
                                    f"{'best' if best else 'last-epoch'} weights yet")
        if p.suffix == ".safetensors":
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
