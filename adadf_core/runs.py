"""Read-only access to a run folder written by ``train.fit`` (layout: docs/ARCHITECTURE.md).

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

from .config import TrainConfig

RUN_MARKERS = ("config.json",)


class NotARunError(FileNotFoundError):
    """The folder is not a run folder."""



def is_finished(run_dir: str | Path) -> bool:
    """True when ``run_dir/summary.json`` exists, parses and says finished (a corrupt or missing summary
    is an unfinished run: it is resumed from its checkpoint, never overwritten)."""
    try:
        return bool(json.loads((Path(run_dir) / "summary.json").read_text()).get("finished", False))
    except (OSError, ValueError):
        return False

class Run:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise NotARunError(f"{self.path} is not a run folder: the folder does not exist")
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
        return json.loads((self.path / "config.json").read_text())

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
        return json.loads(p.read_text()) if p else {}

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
    def load_model(self, best: bool = False, device="cpu"):
        """Rebuild the run's model and load the last-epoch (``checkpoint.pt``) or best (``best_model.pt``)
        weights. Returns the model in eval mode."""
        import torch
        from .methods import get_method

        name = "best_model.pt" if best else "checkpoint.pt"
        p = self._file(name)
        if p is None:
            raise FileNotFoundError(f"{self.path / name} does not exist: the run has no "
                                    f"{'best' if best else 'last-epoch'} weights yet")
        blob = torch.load(p, map_location="cpu", weights_only=False)
        state = blob["model"] if isinstance(blob, dict) and "model" in blob else blob
        cfg = self.config
        num_classes = len(self.class_names) or int(self.environment.get("num_classes", 7))
        method = get_method(cfg.method)(cfg, num_classes, None, torch.device(device))
        model = method.build_model(pretrained=False).to(device)
        from .train import load_model_state
        load_model_state(model, state, p)
        return model.eval()


def list_runs(root: str | Path) -> list[Run]:
    """Every run folder below ``root`` (recursively), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [Run(p.parent) for p in sorted(root.rglob("config.json")) if (p.parent / "metrics.csv").exists()
            or (p.parent / "checkpoint.pt").exists()]
