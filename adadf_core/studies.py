"""Multi-run studies the notebooks call: ablation (paper Table 2), sensitivity (Table 1), label noise (Table 4).

Run folders are named by one rule so that notebooks (and the comparison notebook) reuse each other's runs::

    <runs_root>/<method>-seed<seed>                       the data set's preset configuration
    <runs_root>/<method>-<tag><value>-...-seed<seed>      every setting that differs from the preset

``run_dir_for(runs_root, method, seed, **overrides)`` formats the name from the overrides it is given;
``run_dir_for_config(runs_root, cfg)`` computes those overrides as the fields of ``cfg`` that differ from
``make_config(cfg.dataset)`` (machinery such as device, threads or progress bars is ignored). Tags are
short names for the common fields (``NAME_TAGS``: ``t`` threshold, ``ehat`` epoch threshold, ``lmin``
lambda_min, ``noise`` noise rate, ``ep`` epochs, ``ntr``/``nte`` max train/test samples, ``img`` image
size, ...); other fields use their own name. Overrides are sorted by tag, floats are written with ``%g``,
file paths by their stem. Example: ``adadf-lmin0.1-seed0``, ``adadf-noise0.2-seed1``.

Accuracies in every table are fractions in [0, 1]; the text columns (``best``, ``last``) show percent.
"""
from __future__ import annotations

import dataclasses
import math
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from .config import MACHINERY_FIELDS, METHODS as CONFIG_METHODS, TrainConfig, make_config, resolve_config
from .fileio import atomic_write, unique_path, write_text
from .runs import is_finished

ABLATION_METHODS = ("baseline", "cd_only", "ld_only", "adadf")

# spec section 10 / Table 1
DEFAULT_SENSITIVITY_GRID: dict[str, list] = {
    "lambda_min": [0.0, 0.1, 0.2, 0.3, 0.4],
    "threshold": [0.4, 0.5, 0.6, 0.7, 0.8],
    "epoch_threshold": [1, 3, 5, 7, 9],
}
DEFAULT_NOISE_RATES = (0.0, 0.1, 0.2, 0.3)
DEFAULT_NOISE_METHODS = ("baseline", "adadf", "scn", "slm_aea")

# Numbers printed in the paper (percent). Ablation: spec section 5, best test epoch, ResNet-18.
# Noise: spec section 8 (Ada-DF) and peer_methods.md (SCN, EAC: both ResNet-18; the Ada-DF paper
# labels EAC's numbers "ResNet50", but they are ResNet-18).
paper_numbers: dict[str, Any] = {
    "ablation": {
        "raf": {"label": "RAF-DB", "backbone": "ResNet-18 (MS-Celeb-1M)", "metric": "best test accuracy (%)",
                "baseline": 88.71, "cd_only": 89.28, "ld_only": 89.50, "adadf": 90.04},
        "affectnet7": {"label": "AffectNet-7", "backbone": "ResNet-18 (MS-Celeb-1M)",
                       "metric": "best test accuracy (%)",
                       "baseline": 64.58, "cd_only": 64.63, "ld_only": 64.95, "adadf": 65.34},
        "sfew": {"label": "SFEW 2.0", "backbone": "ResNet-18 (MS-Celeb-1M)", "metric": "best test accuracy (%)",
                 "baseline": 53.90, "cd_only": 56.05, "ld_only": 60.23, "adadf": 60.46},
    },
    "noise": {
        "label": "RAF-DB", "backbone": "ResNet-18", "metric": "test accuracy (%) under symmetric label noise",
        "adadf": {0.1: 87.81, 0.2: 86.67, 0.3: 84.38},
        "scn": {0.1: 82.18, 0.2: 80.10, 0.3: 77.46},
        "eac": {0.1: 88.02, 0.2: 86.05, 0.3: 84.42},
    },
}
# which paper column a data set is compared with (SynthFER has no paper numbers: RAF-DB's, labelled so)
PAPER_DATASET_FOR = {"raf": "raf", "synthfer": "raf", "affectnet7": "affectnet7", "sfew": "sfew"}

# short tags for run folder names
NAME_TAGS = {
    "threshold": "t", "epoch_threshold": "ehat", "lambda_min": "lmin", "lambda_max": "lmax",
    "rr_ratio": "rr", "noise_rate": "noise", "noise_seed": "nseed", "noise_file": "nfile",
    "epochs": "ep", "batch_size": "bs", "max_train_samples": "ntr", "max_test_samples": "nte",
    "image_size": "img", "recipe": "rcp", "pretrained": "pre", "backbone": "", "profile": "",
    "lr": "lr", "weight_decay": "wd", "lr_gamma": "gamma", "track_samples": "trk",
}
# fields that do not change what a run computes (or are part of the folder name already)
NOT_IN_NAME = set(MACHINERY_FIELDS) | {"dataset", "data_root", "method", "seed"}

# the tiny configuration notebooks use with quick=True (tests)
QUICK_OVERRIDES = dict(epochs=2, max_train_samples=64, max_test_samples=48, image_size=32, recipe="light",
                       batch_size=16, track_samples=4)


# ---------------------------------------------------------------------------------------------
# naming

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
    mine = dataclasses.asdict(resolve_config(dataclasses.replace(cfg, run_dir=cfg.run_dir or "x")))
    base = dataclasses.asdict(resolve_config(make_config(cfg.dataset, cfg.profile, method=cfg.method,
                                                         seed=cfg.seed, run_dir="x")))
    out = {k: v for k, v in mine.items() if k not in NOT_IN_NAME and k != "profile" and v != base[k]}
    if cfg.profile != "official":
        out["profile"] = cfg.profile
    return out


def run_dir_for_config(runs_root: str | Path, cfg: TrainConfig) -> Path:
    """``run_dir_for`` with the overrides computed from ``cfg`` (see ``config_overrides``)."""
    return run_dir_for(runs_root, cfg.method, cfg.seed, **config_overrides(cfg))


# ---------------------------------------------------------------------------------------------
# training

def check_methods_available(methods: Iterable[str]) -> None:
    """Import every method's implementation now, so a missing one fails before any training starts."""
    from .methods import get_method

    for m in methods:
        if m not in CONFIG_METHODS:
            raise ValueError(f"unknown method {m!r}; expected one of {', '.join(CONFIG_METHODS)}")
        try:
            get_method(m)
        except Exception as exc:  # a loud, named failure instead of a silent skip
            raise RuntimeError(f"method {m!r} cannot be used: importing its implementation failed "
                               f"({type(exc).__name__}: {exc})") from exc


def train_or_reuse(cfg: TrainConfig, runs_root: str | Path | None = None, reuse: bool = True):
    """Train ``cfg`` and return its ``Run``; a finished run already in the folder is returned as it is.

    The folder is ``cfg.run_dir`` or, when that is None, ``run_dir_for_config(runs_root, cfg)``.
    With ``reuse=False`` a finished run in the way is moved aside to ``<folder>.replaced-<time>`` (never
    deleted) and the run is trained again. An interrupted run resumes from its checkpoint. A finished run
    of another configuration in the folder makes ``fit`` raise ``RunExistsError``.
    """
    from .train import fit

    if cfg.run_dir is None:
        if runs_root is None:
            raise ValueError("train_or_reuse needs cfg.run_dir or runs_root")
        cfg = dataclasses.replace(cfg, run_dir=str(run_dir_for_config(runs_root, cfg)))
    run_dir = Path(cfg.run_dir)
    if is_finished(run_dir) and not reuse:
        aside = unique_path(run_dir.with_name(f"{run_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"))
        shutil.move(str(run_dir), str(aside))
        print(f"reuse=False: moved the finished run {run_dir} to {aside}")
    # fit checks that a finished run's recorded config matches (RunExistsError otherwise)
    return fit(dataclasses.replace(cfg, reuse=True, resume=True))


def train_many(cfgs: Sequence[TrainConfig], runs_root: str | Path, desc: str = "runs",
               reuse: bool = True) -> list:
    """Train or reuse each config in order under one tqdm bar that names the run in progress."""
    from tqdm.auto import tqdm

    runs = []
    bar = tqdm(list(cfgs), desc=desc, unit="run")
    for cfg in bar:
        path = Path(cfg.run_dir) if cfg.run_dir else run_dir_for_config(runs_root, cfg)
        state = "reuse" if is_finished(path) and reuse else "train"
        bar.set_postfix_str(f"{state} {path.name}")
        runs.append(train_or_reuse(dataclasses.replace(cfg, run_dir=str(path)), reuse=reuse))
    bar.close()
    return runs


# ---------------------------------------------------------------------------------------------
# tables

def _pct(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if std is None or math.isnan(std):
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _last_metric(run, column: str) -> float:
    m = run.metrics
    if column not in m.columns:
        return float("nan")
    values = pd.to_numeric(m[column], errors="coerce").dropna()
    return float(values.iloc[-1]) if len(values) else float("nan")


def results_table(runs) -> pd.DataFrame:
    """One row per run: method, seed, the hyper-parameters that studies vary, best and last accuracy.

    ``runs``: a list of ``Run`` objects or run folder paths, or a mapping name -> Run/path.
    """
    from .runs import Run

    items = runs.items() if isinstance(runs, Mapping) else ((None, r) for r in runs)
    rows = []
    for name, r in items:
        run = r if hasattr(r, "summary") else Run(r)
        s, c = run.summary, run.config
        rows.append(dict(
            run=name or run.path.name, method=c.method, dataset=c.dataset, seed=c.seed,
            epochs=c.epochs, threshold=c.threshold, epoch_threshold=c.epoch_threshold,
            lambda_min=c.lambda_min, noise_rate=c.noise_rate,
            noise_file=Path(c.noise_file).name if c.noise_file else None,
            best_acc=s.get("best_acc", float("nan")), best_epoch=s.get("best_epoch"),
            last_acc=s.get("last_acc", float("nan")), last_epoch=s.get("last_epoch"),
            seconds=s.get("seconds"), path=str(run.path)))
    return pd.DataFrame(rows)


def _aggregate(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean and std (NaN for one seed) of best/last accuracy per group, plus percent text columns."""
    g = df.groupby(by, sort=False, dropna=False)
    out = g.agg(runs=("best_acc", "size"), best_acc=("best_acc", "mean"), best_acc_std=("best_acc", "std"),
                last_acc=("last_acc", "mean"), last_acc_std=("last_acc", "std"),
                best_epoch=("best_epoch", "mean"))
    out["best"] = [_pct(m, s) for m, s in zip(out["best_acc"], out["best_acc_std"])]
    out["last"] = [_pct(m, s) for m, s in zip(out["last_acc"], out["last_acc_std"])]
    return out


def _seed_cfgs(base_cfg: TrainConfig, seeds: Sequence[int], **changes) -> list[TrainConfig]:
    return [dataclasses.replace(base_cfg, run_dir=None, seed=int(s), **changes) for s in seeds]


def ablation_study(base_cfg: TrainConfig, seeds: Sequence[int], runs_root: str | Path,
                   methods: Sequence[str] = ABLATION_METHODS, reuse: bool = True) -> pd.DataFrame:
    """Table 2: each variant trained on the same data and seeds; one row per variant.

    Columns: runs, best_acc, best_acc_std, last_acc, last_acc_std, best_epoch, best, last (percent text),
    paper_best_acc (fraction; NaN when the data set has no paper numbers) and paper_source.
    """
    seeds = list(seeds) or [base_cfg.seed]
    check_methods_available(methods)
    cfgs = [c for m in methods for c in _seed_cfgs(base_cfg, seeds, method=m)]
    runs = train_many(cfgs, runs_root, desc="ablation", reuse=reuse)
    table = _aggregate(results_table(runs), ["method"]).reindex(list(methods))
    table.index.name = "variant"
    paper = paper_numbers["ablation"].get(PAPER_DATASET_FOR.get(base_cfg.dataset, ""))
    table["paper_best_acc"] = [paper[m] / 100 if paper and m in paper else float("nan") for m in methods]
    if paper:
        note = " (SynthFER has no paper numbers)" if base_cfg.dataset == "synthfer" else ""
        table["paper_source"] = f"{paper['label']}, {paper['backbone']}, paper Table 2{note}"
    else:
        table["paper_source"] = "no paper numbers for this data set"
    return table


def _grid_fields(grid: Mapping[str, Sequence]) -> None:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = [k for k in grid if k not in known]
    if bad:
        raise ValueError(f"sensitivity grid names unknown TrainConfig field(s) {bad}; "
                         f"the paper's grid uses {list(DEFAULT_SENSITIVITY_GRID)}")


def sensitivity_study(base_cfg: TrainConfig, grid: Optional[Mapping[str, Sequence]] = None,
                      runs_root: str | Path = "runs", seeds: Sequence[int] | None = None,
                      reuse: bool = True) -> pd.DataFrame:
    """Table 1: vary one hyper-parameter at a time around ``base_cfg`` (the shared centre point is
    trained once). One row per (parameter, value) with best/last accuracy and ``is_base``."""
    grid = dict(DEFAULT_SENSITIVITY_GRID if grid is None else grid)
    _grid_fields(grid)
    seeds = list(seeds) if seeds else [base_cfg.seed]
    points, cfgs, seen = [], [], set()
    for param, values in grid.items():
        for v in values:
            for c in _seed_cfgs(base_cfg, seeds, **{param: type(getattr(base_cfg, param))(v)
                                                    if getattr(base_cfg, param) is not None else v}):
                path = run_dir_for_config(runs_root, c)
                points.append((param, v, c.seed, path))
                if path not in seen:
                    seen.add(path)
                    cfgs.append(dataclasses.replace(c, run_dir=str(path)))
    runs = train_many(cfgs, runs_root, desc="sensitivity", reuse=reuse)
    by_path = {Path(r.path): r for r in runs}
    rows = []
    for param, v, seed, path in points:
        s = by_path[path].summary
        rows.append(dict(param=param, value=v, seed=seed, is_base=v == getattr(base_cfg, param),
                         best_acc=s["best_acc"], last_acc=s["last_acc"], best_epoch=s.get("best_epoch"),
                         run=path.name))
    df = pd.DataFrame(rows)
    table = _aggregate(df, ["param", "value"]).reset_index()
    table["is_base"] = [v == getattr(base_cfg, p) for p, v in zip(table["param"], table["value"])]
    return table


def _noise_points(rates: Sequence[float], noise_files) -> list[tuple[str, dict]]:
    points = [(f"{float(r):g}", dict(noise_rate=float(r))) for r in rates]
    if noise_files:
        items = noise_files.items() if isinstance(noise_files, Mapping) else \
            ((Path(p).stem, p) for p in noise_files)
        for label, path in items:
            if not Path(path).is_file():
                raise FileNotFoundError(f"noise label file {path} does not exist")
            points.append((str(label), dict(noise_rate=0.0, noise_file=str(Path(path).resolve()))))
    return points


def noise_study(base_cfg: TrainConfig, rates: Sequence[float] = DEFAULT_NOISE_RATES,
                methods: Sequence[str] = DEFAULT_NOISE_METHODS, seeds: Sequence[int] | None = None,
                runs_root: str | Path = "runs", noise_files=None, reuse: bool = True) -> pd.DataFrame:
    """Table 4: each method under symmetric label noise ``rates`` (and/or external label files
    ``noise_files``: a list of paths or a mapping label -> path). One row per (method, noise) with best
    and last accuracy, the share of flipped samples recovered (``recovered_flipped``, last epoch; NaN
    when the method does not log it), and the paper's number where it has one."""
    methods = list(methods)
    check_methods_available(methods)
    seeds = list(seeds) if seeds else [base_cfg.seed]
    rows, cfgs = [], []
    points = _noise_points(rates, noise_files)
    for m in methods:
        for label, changes in points:
            for c in _seed_cfgs(base_cfg, seeds, method=m, **changes):
                cfgs.append(dataclasses.replace(c, run_dir=str(run_dir_for_config(runs_root, c))))
                rows.append(dict(method=m, noise=label))
    runs = train_many(cfgs, runs_root, desc="noise", reuse=reuse)
    for row, run in zip(rows, runs):
        s = run.summary
        row.update(best_acc=s["best_acc"], last_acc=s["last_acc"], best_epoch=s.get("best_epoch"),
                   recovered_flipped=_last_metric(run, "recovered_flipped"),
                   attn_flipped=_last_metric(run, "attn_flipped"), attn_clean=_last_metric(run, "attn_clean"))
    df = pd.DataFrame(rows)
    table = _aggregate(df, ["method", "noise"])
    extra = df.groupby(["method", "noise"], sort=False)[["recovered_flipped", "attn_flipped", "attn_clean"]].mean()
    table = table.join(extra).reset_index()
    paper = paper_numbers["noise"]

    def paper_value(m, noise):
        try:
            return paper[m][round(float(noise), 2)] / 100
        except (KeyError, ValueError):
            return float("nan")
    table["paper_acc"] = [paper_value(m, n) for m, n in zip(table["method"], table["noise"])]
    table["paper_source"] = f"{paper['label']}, {paper['backbone']}, paper Table 4"
    return table


# ---------------------------------------------------------------------------------------------
# writing tables

def _md_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else f"{v:.4f}"
    return str(v).replace("|", "\\|")


def to_markdown(df: pd.DataFrame, index: bool = True) -> str:
    """A GitHub Markdown table (no extra dependency); floats with 4 decimals, NaN as blank."""
    frame = df.reset_index() if index and (df.index.name or not isinstance(df.index, pd.RangeIndex)) else df
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_md_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def save_table(df: pd.DataFrame, out_dir: str | Path, name: str) -> dict[str, Path]:
    """Write ``out_dir/tables/<name>.csv`` (full precision) and ``<name>.md``; return both paths."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"table name {name!r} must be letters, digits, '.', '_' or '-'")
    folder = Path(out_dir) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    keep_index = bool(df.index.name) or not isinstance(df.index, pd.RangeIndex)
    csv, md = folder / f"{name}.csv", folder / f"{name}.md"
    atomic_write(csv, lambda p: df.to_csv(p, index=keep_index))
    write_text(md, to_markdown(df, index=keep_index))
    return {"csv": csv, "md": md}


# ---------------------------------------------------------------------------------------------
# notebook set-up

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
        """Train or reuse one run (see ``train_or_reuse``)."""
        return train_or_reuse(self.cfg(method, seed, **changes), reuse=self.reuse)


def _abs(path: str | Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def notebook_setup(dataset: str = "synthfer", data_root: str | None = None,
                   output_dir: str = "results/synthfer", runs_dir: str | None = None,
                   epochs: int | None = None, seeds: Sequence[int] = (0,), device: str = "auto",
                   profile: str = "official", quick: bool = False, reuse_runs: bool = True,
                   **overrides) -> NotebookContext:
    """Turn the notebook parameters into folders and a base config. Relative paths are taken from the
    repository root (so a notebook opened in notebooks/ writes to <repo>/results/...). ``quick`` shrinks
    the run to ``QUICK_OVERRIDES`` (tests); ``overrides`` are extra TrainConfig fields."""
    out = _abs(output_dir)
    runs_root = _abs(runs_dir) if runs_dir else out / "runs"
    for p in (out / "figures", out / "tables", runs_root):
        p.mkdir(parents=True, exist_ok=True)
    values = dict(QUICK_OVERRIDES) if quick else {}
    if epochs is not None:
        values["epochs"] = int(epochs)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if data_root is not None:
        values["data_root"] = str(_abs(data_root))
    seeds = [int(s) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds])]
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    cfg = make_config(dataset, profile, device=device, seed=seeds[0], **values)
    resolve_config(cfg)  # validate now, with a clear message
    return NotebookContext(dataset=dataset, output_dir=out, runs_root=runs_root, base_cfg=cfg, seeds=seeds,
                           quick=bool(quick), reuse=bool(reuse_runs))
