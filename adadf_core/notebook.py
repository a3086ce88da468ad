"""What every notebook does first: turn its parameters into folders and one resolved base config.

    ctx = notebook.setup(dataset=dataset, output_dir=output_dir, epochs=epochs, seeds=seeds, ...)
    ctx.train("adadf")                    # train or reuse one run, named by runs.run_dir_for_config
    ctx.cfg("scn", seed=1, epochs=3)      # a config of the study, its run folder by the same rule
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from .budgets import QUICK_RUN
from .config import TrainConfig, make_config, resolve_config
from .runs import run_dir_for_config


def project_root() -> Path:
    """The repository root (the folder holding adadf_core/)."""
    return Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class NotebookContext:
    """What every notebook derives from its parameters: folders and the base training config."""
    dataset: str
    output_dir: Path
    runs_root: Path
    base_cfg: TrainConfig
    seeds: list[int]
    quick: bool
    reuse: bool

    @property
    def figures_dir(self) -> Path:
        return self.output_dir / "figures"

    @property
    def tables_dir(self) -> Path:
        return self.output_dir / "tables"

    def cfg(self, method: str = "adadf", seed: int | None = None, **changes) -> TrainConfig:
        """The base config for ``method`` and ``seed`` with ``changes``; run_dir by the naming rule."""
        c = dataclasses.replace(self.base_cfg, method=method,
                                seed=self.seeds[0] if seed is None else int(seed), **changes)
        return dataclasses.replace(c, run_dir=str(run_dir_for_config(self.runs_root, c)))

    def variant(self, **changes) -> TrainConfig:
        """The base config with ``changes`` applied; ``None`` values leave the base value."""
        return dataclasses.replace(self.base_cfg, **{k: v for k, v in changes.items() if v is not None})

    def train(self, method: str = "adadf", seed: int | None = None, **changes):
        """Train or reuse one run (see ``studies.train_or_reuse``)."""
        from .studies import train_or_reuse
        return train_or_reuse(self.cfg(method, seed, **changes), reuse=self.reuse)


def _abs(path: str | Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def setup(dataset: str = "synthfer", data_root: str | None = None, output_dir: str = "results/synthfer",
          runs_dir: str | None = None, epochs: int | None = None, seeds: Sequence[int] = (0,),
          device: str = "auto", profile: str = "official", quick: bool = False, reuse_runs: bool = True,
          **overrides) -> NotebookContext:
    """Turn the notebook parameters into folders and a base config. Relative paths are taken from the
    repository root (so a notebook opened in notebooks/ writes to <repo>/results/...). ``quick`` shrinks
    the run to ``budgets.QUICK_RUN`` (tests); ``overrides`` are extra TrainConfig fields."""
    out = _abs(output_dir)
    runs_root = _abs(runs_dir) if runs_dir else out / "runs"
    for p in (out / "figures", out / "tables", runs_root):
        p.mkdir(parents=True, exist_ok=True)
    values = dict(QUICK_RUN) if quick else {}
    if epochs is not None:
        values["epochs"] = int(epochs)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if data_root is not None:
        values["data_root"] = str(_abs(data_root))
    seeds = [int(s) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds])]
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    cfg = resolve_config(make_config(dataset, profile, device=device, seed=seeds[0], **values))
    return NotebookContext(dataset=dataset, output_dir=out, runs_root=runs_root, base_cfg=cfg, seeds=seeds,
                           quick=bool(quick), reuse=bool(reuse_runs))
