"""What every notebook does first: turn its parameters into folders and one resolved base config.

    ctx = notebook.setup(dataset=dataset, output_dir=output_dir, epochs=epochs, seeds=seeds, ...)
    ctx.train("adadf")                    # train or reuse one run, named by runs.run_dir_for_config
    ctx.cfg("scn", seed=1, epochs=3)      # a config of the study, its run folder by the same rule

Where results go. ``adadf reproduce`` passes ``output_dir`` (``results/<dataset>``, git-ignored). A
notebook opened in JupyterLab keeps ``output_dir = None``: its results go to a scratch folder,
``results/lab/<dataset>`` (or ``$ADADF_LAB_RESULTS/<dataset>``), also git-ignored. Quick runs always go to
a folder of their own (``...-quick``). Nothing is ever written under ``results/reference/``, the committed
reference that a new run is compared with (``pipeline.compare_with_reference``).

Defaults. ``"auto"`` (seeds, pretrained) means the pipeline's budget for the data set
(``budgets.budget_for``), so a notebook run with its defaults computes what ``make reproduce`` computes.

Parameter values. A ``-p`` value reaches a notebook as text under plain ``papermill`` (``-p seeds [0,1]``
gives the string ``"[0,1]"``) and as a typed value under ``adadf reproduce``; ``parse`` reads text the way
``adadf reproduce`` does (JSON, then a Python literal, else the text itself), so ``-p`` means the same in both.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

from adadf_core.config import make_config, resolve_config, TrainConfig
from adadf_core.pipeline.budgets import QUICK_RUN, SYNTHFER_BACKBONE, budget_for
from adadf_core.runs.naming import run_dir_for_config
from adadf_core.studies.experiments import train_many, train_or_reuse
from adadf_core.studies import pretrain
from adadf_core.utils.fileio import PROJECT_ROOT

AUTO = "auto"
LAB_RESULTS_VARIABLE = "ADADF_LAB_RESULTS"
QUICK_SUFFIX = "-quick"


def project_root() -> Path:
    """The repository root (the folder holding adadf_core/)."""
    return PROJECT_ROOT


def reference_root() -> Path:
    """``results/reference``: the committed reference results, one folder per data set (never written)."""
    return project_root() / "results" / "reference"


def parameter_value(value: Any) -> Any:
    """A parameter as ``adadf reproduce -p`` reads it: text is JSON (true, null, 3, [0, 1], {"a": 1}), else
    a Python literal (True, None, (0, 1)), else the text itself; other values are returned as they are."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value


def parse(*values: Any):
    """``parameter_value`` of each value (one value: returned alone) — for a notebook's own parameters."""
    out = tuple(parameter_value(v) for v in values)
    return out[0] if len(out) == 1 else out


def quick_folder(path: str | Path) -> Path:
    """``path`` with ``-quick`` appended to its name (unless it already ends so): quick results never mix
    with full ones."""
    path = Path(path)
    return path if path.name.endswith(QUICK_SUFFIX) else path.with_name(path.name + QUICK_SUFFIX)


def check_not_reference(path: str | Path) -> Path:
    """``path``, resolved; a ``ValueError`` when it lies in the committed reference (``results/reference``)."""
    path = Path(path).resolve()
    ref = reference_root().resolve()
    if path == ref or path.is_relative_to(ref):
        raise ValueError(f"{path} is inside the committed reference results ({ref}); write results to "
                         f"results/<dataset> (adadf reproduce) or leave output_dir=None (scratch folder "
                         f"results/lab/<dataset>)")
    return path


def output_folder(output_dir: str | Path | None, dataset: str, quick: bool = False) -> Path:
    """The folder a notebook writes to (module docstring): ``output_dir`` (relative paths from the
    repository root) or the scratch folder; ``-quick`` appended for quick runs; never the reference."""
    if output_dir is None:
        lab = os.environ.get(LAB_RESULTS_VARIABLE)
        out = Path(lab).expanduser() / dataset if lab else project_root() / "results" / "lab" / dataset
    else:
        out = _abs(output_dir)
    return check_not_reference(quick_folder(out) if quick else out)


def display_path(path: str | Path) -> str:
    """``path`` relative to the repository root when it lies inside it (what notebooks print: an executed
    notebook holds no absolute path of the machine that ran it)."""
    path = Path(path)
    try:
        return path.resolve().relative_to(project_root()).as_posix()
    except ValueError:
        return str(path)


def resolve_pretrained(pretrained: Any, dataset: str, quick: bool = False, device: str = "auto") -> str | None:
    """``"auto"``: the budget's weights for ``dataset``; ``"synthfer-backbone"``: the SynthFER-pretrained
    ResNet-18's file (pretrained once, then reused); ``None``: from scratch; else the path given."""
    pretrained = parameter_value(pretrained)
    if pretrained == AUTO:
        pretrained = budget_for(dataset, quick).get("pretrained")
    if pretrained == SYNTHFER_BACKBONE:
        return display_path(pretrain.synthfer_backbone(device=device))
    return pretrained


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
    study_seeds: list[int] = dataclasses.field(default_factory=list)   # every table but the headline's

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
        return train_or_reuse(self.cfg(method, seed, **changes), reuse=self.reuse)

    def train_seeds(self, method: str = "adadf", seeds: Sequence[int] | None = None, desc: str | None = None,
                    **changes) -> list:
        """Train or reuse ``method`` for each seed (default: the study's seeds), one bar over the runs; spread
        over several devices under ``adadf reproduce --devices`` (``studies.train_many``)."""
        cfgs = [self.cfg(method, s, **changes) for s in (self.seeds if seeds is None else seeds)]
        return train_many(cfgs, self.runs_root, desc=desc or f"{method} seeds", reuse=self.reuse)


def _abs(path: str | Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def base_config(dataset: str = "synthfer", data_root: str | None = None, epochs: int | None = None,
                seeds: Sequence[int] | str = AUTO, device: str = "auto", profile: str = "official",
                quick: bool = False, train_overrides: dict | str | None = None,
                **overrides) -> tuple[TrainConfig, list[int]]:
    """The resolved base config and the seeds that a notebook's parameters give (no weights yet, nothing
    written): ``adadf reproduce`` calls it for every notebook before anything runs, so that a bad ``-p``
    value fails at once, naming the parameter."""
    dataset, data_root, epochs, seeds, device, profile, quick = parse(
        dataset, data_root, epochs, seeds, device, profile, quick)
    train_overrides = parameter_value(train_overrides) or {}
    if not isinstance(train_overrides, dict):
        raise ValueError(f"train_overrides must be a dict of TrainConfig fields, got {train_overrides!r}")
    if not isinstance(quick, bool):
        raise ValueError(f"quick={quick!r} is not valid; expected true or false")
    values = dict(QUICK_RUN) if quick else {}
    if epochs is not None:
        values["epochs"] = epochs               # checked with the config: an integer >= 1
    values.update({k: parameter_value(v) for k, v in {**train_overrides, **overrides}.items() if v is not None})
    if data_root is not None:
        values["data_root"] = str(_abs(data_root))
    seeds = seed_list(seeds, dataset, quick)
    return resolve_config(make_config(dataset, profile, device=device, seed=seeds[0], **values)), seeds


def seed_list(value: Any, dataset: str, quick: bool = False, key: str = "seeds",
              fallback: Sequence[int] | None = None) -> list[int]:
    """A seeds parameter as a list: ``"auto"`` gives the budget's ``key`` (``budgets.budget_for``), or ``fallback``
    where the budget has none; a ``ValueError`` naming ``key`` unless it is a seed or a list of seeds."""
    value = parameter_value(value)
    if value == AUTO:
        value = budget_for(dataset, quick).get(key)
        value = list(fallback) if value is None and fallback is not None else value
    seeds = list(value) if isinstance(value, (list, tuple)) else [value]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ValueError(f"{key}={value!r} is not valid; expected \"auto\", a seed or a list of seeds (integers >= 0)")
    return seeds


def setup(dataset: str = "synthfer", data_root: str | None = None, output_dir: str | None = None,
          runs_dir: str | None = None, epochs: int | None = None, seeds: Sequence[int] | str = AUTO,
          device: str = "auto", profile: str = "official", quick: bool = False, reuse_runs: bool = True,
          pretrained: str | None = AUTO, train_overrides: dict | str | None = None,
          study_seeds: Sequence[int] | str = AUTO, **overrides) -> NotebookContext:
    """Turn the notebook parameters into folders and a base config (module docstring: where results go,
    ``"auto"``, text values). Relative paths are taken from the repository root (so a notebook opened in
    notebooks/ writes to <repo>/results/...). ``quick`` shrinks the run to ``budgets.QUICK_RUN`` (tests);
    ``train_overrides`` and ``overrides`` are extra TrainConfig fields. ``seeds`` are the headline's (Table 2's
    baseline and Ada-DF); ``study_seeds`` every other table's (``"auto"``: the budget's, else ``seeds``)."""
    cfg, seeds = base_config(dataset, data_root, epochs, seeds, device, profile, quick, train_overrides, **overrides)
    study_seeds = seed_list(study_seeds, parse(dataset), bool(parse(quick)), "study_seeds", fallback=seeds)
    dataset, output_dir, runs_dir, quick, reuse_runs = parse(dataset, output_dir, runs_dir, quick, reuse_runs)
    out = output_folder(output_dir, dataset, bool(quick))
    runs_root = check_not_reference(_abs(runs_dir) if runs_dir else out / "runs")
    for p in (out / "figures", out / "tables", runs_root):
        p.mkdir(parents=True, exist_ok=True)
    # the weights last: a bad parameter fails before the SynthFER backbone is pretrained
    pretrained = resolve_pretrained(pretrained, dataset, bool(quick), device)
    if pretrained is not None:
        cfg = resolve_config(dataclasses.replace(cfg, pretrained=str(_abs(pretrained))))
    return NotebookContext(dataset=dataset, output_dir=out, runs_root=runs_root, base_cfg=cfg, seeds=seeds,
                           quick=bool(quick), reuse=bool(reuse_runs), study_seeds=study_seeds)
