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
from .fileio import atomic_write, write_json, write_text


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
                "summary.json", "best_model.pt", "confusion.npy", "confusion_best.npy", "features.npz")


def check_run_dir(cfg: TrainConfig, run_dir: Path) -> tuple[str, Optional["Run"]]:
    """Decide what to do with ``run_dir``: ("fresh" | "resume" | "done", Run or None)."""
    if not run_dir.exists() or not any(run_dir.iterdir()):
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
    return "fresh", None   # a run that died before its first checkpoint: start over


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
    """Writes the files of one run folder, each atomically (``fileio.atomic_write``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def start_fresh(self) -> None:
        """Create the folder and remove the record files of a run that died before its first checkpoint."""
        self.path.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            (self.path / name).unlink(missing_ok=True)

    def array(self, name: str, array) -> None:
        def write(p):
            with open(p, "wb") as fh:
                np.save(fh, np.asarray(array))
        atomic_write(self.path / name, write)

    def arrays(self, name: str, arrays: dict) -> None:
        def write(p):
            with open(p, "wb") as fh:
                np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
        atomic_write(self.path / name, write)

    def torch_file(self, name: str, obj) -> None:
        import torch
        atomic_write(self.path / name, lambda p: torch.save(obj, p))

    def json(self, name: str, data) -> None:
        write_json(self.path / name, data)

    def records(self, history: dict, tracked_info: Optional[dict]) -> None:
        """Rewrite metrics.csv and the per-epoch record files from ``history``."""
        write_text(self.path / "metrics.csv", _metrics_frame(history["metrics"]).to_csv(index=False))
        if history["class_distributions"]:
            self.array("class_distributions.npy", np.stack(history["class_distributions"]).astype(np.float32))
        if history["attention_rows"]:
            import pandas as pd
            write_text(self.path / "attention_by_class.csv",
                       pd.DataFrame(history["attention_rows"]).to_csv(index=False))
        if tracked_info is not None and history["tracked"]:
            arrays = dict(tracked_info)
            for key in history["tracked"][0]:
                arrays[key] = np.stack([rec[key] for rec in history["tracked"]])
            self.arrays("tracked.npz", arrays)


# ----------------------------------------------------------------------------------------- reading
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
        from .methods import build_model_for
        from .model import load_model_state

        name = "best_model.pt" if best else "checkpoint.pt"
        p = self._file(name)
        if p is None:
            raise FileNotFoundError(f"{self.path / name} does not exist: the run has no "
                                    f"{'best' if best else 'last-epoch'} weights yet")
        blob = torch.load(p, map_location="cpu", weights_only=False)
        state = blob["model"] if isinstance(blob, dict) and "model" in blob else blob
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
            or (p.parent / "checkpoint.pt").exists()]
