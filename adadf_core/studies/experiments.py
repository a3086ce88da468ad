"""Multi-run studies the notebooks call: ablation (paper Table 2), sensitivity (Table 1), label noise (Table 4).

Every run folder is named by ``runs.run_dir_for_config`` (one rule), so notebooks reuse each other's runs.
Accuracies in every table are fractions in [0, 1]; the text columns (``best``, ``last``) show percent.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import re
import shutil
import time
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from adadf_core.config import TrainConfig
from adadf_core.engine import train
from adadf_core.methods import get_method
from adadf_core.runs.naming import run_dir_for_config
from adadf_core.runs.reader import is_finished, resumable, Run
from adadf_core.studies import protocol
from adadf_core.studies.paper import PAPER_NUMBERS, ablation_numbers, noise_number
from adadf_core.utils.fileio import unique_path
from adadf_core.utils.progress import bar, note

ABLATION_METHODS = ("baseline", "cd_only", "ld_only", "adadf")

# docs/METHOD.md §10 / Table 1
DEFAULT_SENSITIVITY_GRID: dict[str, list] = {
    "lambda_min": [0.0, 0.1, 0.2, 0.3, 0.4],
    "threshold": [0.4, 0.5, 0.6, 0.7, 0.8],
    "epoch_threshold": [1, 3, 5, 7, 9],
}
DEFAULT_NOISE_RATES = (0.0, 0.1, 0.2, 0.3)
DEFAULT_NOISE_METHODS = ("baseline", "adadf", "scn", "slm_aea")

# The devices a study's independent runs are spread over (``adadf reproduce --devices cuda:0,cuda:1`` sets it
# for the notebooks' kernels): ``train_many`` reads it when it is not given devices.
DEVICES_VARIABLE = "ADADF_DEVICES"

# ---------------------------------------------------------------------------------------------
# training

def parse_devices(text: str | Sequence[str] | None) -> list[str]:
    """``"cuda:0,cuda:1"`` (or a list) -> ``["cuda:0", "cuda:1"]``; ``None`` or ``""`` -> ``[]``. Each entry is
    ``cpu``, ``cuda`` or ``cuda:N``; anything else is a ``ValueError`` naming it."""
    items = [str(t).strip().lower() for t in (text.split(",") if isinstance(text, str) else (text or []))]
    items = [t for t in items if t]
    bad = [t for t in items if not re.fullmatch(r"cpu|cuda(:\d+)?", t)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a device; expected a comma-separated list of cpu, cuda or cuda:N, "
                         "e.g. cuda:0,cuda:1")
    return items


def default_devices() -> list[str]:
    """The devices of ``$ADADF_DEVICES`` (empty: none set)."""
    return parse_devices(os.environ.get(DEVICES_VARIABLE))


def check_methods_available(methods: Iterable[str]) -> None:
    """Every name must be a registered method: an unknown one fails before any training starts."""
    for m in methods:
        get_method(m)


def train_or_reuse(cfg: TrainConfig, runs_root: str | Path | None = None, reuse: bool = True):
    """Train ``cfg`` and return its ``Run``; a finished run already in the folder is returned as it is.

    The folder is ``cfg.run_dir`` or, when that is None, ``run_dir_for_config(runs_root, cfg)``.
    With ``reuse=False`` a finished run in the way is moved aside to ``<folder>.replaced-<time>`` (never
    deleted) and the run is trained again. An interrupted run resumes from its checkpoint. A finished run
    of another configuration in the folder makes ``fit`` raise ``RunExistsError``.
    """
    if cfg.run_dir is None:
        if runs_root is None:
            raise ValueError("train_or_reuse needs cfg.run_dir or runs_root")
        cfg = dataclasses.replace(cfg, run_dir=str(run_dir_for_config(runs_root, cfg)))
    run_dir = Path(cfg.run_dir)
    if is_finished(run_dir) and not reuse:
        aside = unique_path(run_dir.with_name(f"{run_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"))
        shutil.move(str(run_dir), str(aside))
        print(f"reuse=False: moved the finished run {run_dir} to {aside}")
    # fit checks that a finished run's recorded config matches (RunExistsError otherwise); an interrupted
    # run (a checkpoint, not finished) is continued
    return train.fit(dataclasses.replace(cfg, reuse=True, resume=resumable(run_dir)))


def train_on_devices(cfgs: Sequence[TrainConfig], runs_root: str | Path, devices: Sequence[str],
                     reuse: bool = True) -> list:
    """Train or reuse independent runs concurrently, one process per entry of ``devices`` (for example
    ``["cuda:0", "cuda:1"]``; ``"cpu"`` may repeat): process k trains configs k, k + N, ... in order on its
    device, through ``train_or_reuse``. The device is a machinery field, so folder names, reuse and the
    numbers are those of a sequential ``train_many``. Returns the runs in the order of ``cfgs``."""
    cfgs, devices = list(cfgs), list(devices)
    if not devices:
        raise ValueError("train_on_devices: devices=[] is not valid; expected at least one device such as cuda:0")
    paths = [_folder(c, runs_root) for c in cfgs]
    # a folder named twice (seeds "0,0") is trained once, as in sequence
    todo = [i for i, p in enumerate(paths) if p not in paths[:i]]
    groups = [[dataclasses.replace(cfgs[i], run_dir=str(paths[i]), device=dev)
               for i in todo[k::len(devices)]] for k, dev in enumerate(devices)]
    with concurrent.futures.ProcessPoolExecutor(len(devices), mp_context=multiprocessing.get_context("spawn")) as pool:
        for done in [pool.submit(_train_in_order, group, reuse) for group in groups if group]:
            done.result()
    return [Run(p) for p in paths]


def _folder(cfg: TrainConfig, runs_root: str | Path) -> Path:
    """The run folder of ``cfg``: its ``run_dir``, else the one the naming rule gives under ``runs_root``."""
    return Path(cfg.run_dir) if cfg.run_dir else run_dir_for_config(runs_root, cfg)


def _train_in_order(cfgs: list, reuse: bool) -> None:
    """One device's share of ``train_on_devices`` (a child process)."""
    for cfg in cfgs:
        train_or_reuse(cfg, reuse=reuse)


def train_many(cfgs: Sequence[TrainConfig], runs_root: str | Path, desc: str = "runs",
               reuse: bool = True, devices: Optional[Sequence[str]] = None) -> list:
    """Train or reuse each config in order under one bar that names the run in progress, with one line
    per run (``desc i/n: train|reuse <folder>``). With several ``devices`` (default: ``$ADADF_DEVICES``)
    the runs go to ``train_on_devices`` instead, one process per device, the same runs and numbers."""
    runs = []
    cfgs = [dataclasses.replace(c, run_dir=str(_folder(c, runs_root))) for c in cfgs]
    from_env = devices is None
    devices = default_devices() if from_env else parse_devices(devices)
    if len(devices) > 1:
        todo = sum(not (is_finished(c.run_dir) and reuse) for c in cfgs)
        note(f"{desc}: {len(cfgs)} runs ({todo} to train) on {len(devices)} devices ({', '.join(devices)})")
        if todo:
            return train_on_devices(cfgs, runs_root, devices, reuse=reuse)
        devices = []   # every run finished: reused here (each config checked), no processes to start
    if devices:
        if from_env:      # a variable left in a shell must not move runs without a word
            note(f"{desc}: every run on {devices[0]} (${DEVICES_VARIABLE}={os.environ[DEVICES_VARIABLE]})")
        cfgs = [dataclasses.replace(c, device=devices[0]) for c in cfgs]
    runs_bar = bar(cfgs, desc=desc, unit="run")
    for i, cfg in enumerate(runs_bar, 1):
        path = Path(cfg.run_dir)
        state = "reuse" if is_finished(path) and reuse else "train"
        runs_bar.set_postfix_str(f"{state} {path.name}")
        note(f"{desc} {i}/{len(cfgs)}: {state} {path.name}")
        runs.append(train_or_reuse(cfg, reuse=reuse))
    runs_bar.close()
    return runs


# ---------------------------------------------------------------------------------------------
# tables

def _last_metric(run, column: str) -> float:
    m = run.metrics
    if column not in m.columns:
        return float("nan")
    values = pd.to_numeric(m[column], errors="coerce").dropna()
    return float(values.iloc[-1]) if len(values) else float("nan")


def _curve(row: Mapping, metrics: pd.DataFrame) -> dict:
    """One run's per-epoch curve for ``plots.noise_curves``: test accuracy and accuracy on its training labels."""
    return dict(method=row["method"], noise=row["noise"], seed=row["seed"], epoch=metrics["epoch"].tolist(),
                test=metrics["test_acc"].tolist(),
                train=metrics.get("train_acc", metrics["test_acc"] * np.nan).tolist())


def _last_fallback_rows(run) -> float:
    """How many rows of the run's last class-distribution matrix are the threshold fallback (NaN: no D)."""
    from adadf_core.studies.analysis import fallback_rows      # (sklearn: only for runs that mined a D)

    dists = run.class_distributions
    return float("nan") if dists is None or not len(dists) else float(fallback_rows(dists[-1], run.config.threshold).sum())


def results_table(runs) -> pd.DataFrame:
    """One row per run: method, seed, the hyper-parameters that studies vary, and the protocol scores
    (``protocol.run_scores``: best / last / mean of the last k epochs, overall and balanced accuracy).

    ``runs``: a list of ``Run`` objects or run folder paths, or a mapping name -> Run/path. ``path`` is
    the run folder's name relative to its runs folder's parent (no absolute path reaches a table).
    """
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
            **protocol.run_scores(run), last_epoch=s.get("last_epoch"),
            test_images=run.environment.get("num_test"), curve_images=run.environment.get("num_curve"),
            seconds=s.get("seconds"), path=f"{run.path.parent.name}/{run.path.name}"))
    return pd.DataFrame(rows)


def summarise(per_run: pd.DataFrame, by: Sequence[str] | str, order: Optional[Sequence] = None,
              baseline: Optional[str] = "baseline") -> pd.DataFrame:
    """The protocol card of ``per_run`` grouped by ``by`` (``protocol.protocol_card``) with the text
    columns ``best``, ``last`` and ``mean_last_k`` (percent, mean ± std [95 % CI])."""
    card = protocol.protocol_card(per_run, by=by, baseline=baseline, order=order)
    for sel in protocol.SELECTIONS:
        card[sel] = protocol.metric_text(card, f"{sel}_acc")
    # each run's accuracies, for the figures' per-seed dots (attrs: not written to the table's files)
    keys = [by] if isinstance(by, str) else list(by)
    cols = [c for c in (*keys, "seed", "best_acc", "last_acc", "mean_last_k_acc") if c in per_run]
    card.attrs["runs"] = per_run[cols].to_dict("records")
    card.attrs["test_images"] = _one_value(per_run, "test_images")
    card.attrs["curve_images"] = _one_value(per_run, "curve_images")
    return card


def _one_value(per_run: pd.DataFrame, column: str):
    """The column's value when every run has the same one (an int), else None."""
    values = set(per_run[column].dropna().astype(int)) if column in per_run else set()
    return values.pop() if len(values) == 1 else None


def _seed_cfgs(base_cfg: TrainConfig, seeds: Sequence[int], **changes) -> list[TrainConfig]:
    return [dataclasses.replace(base_cfg, run_dir=None, seed=int(s), **changes) for s in seeds]


HEADLINE_METHODS = ("baseline", "adadf")


def ablation_study(base_cfg: TrainConfig, seeds: Sequence[int], runs_root: str | Path,
                   methods: Sequence[str] = ABLATION_METHODS, reuse: bool = True,
                   variant_seeds: Optional[Sequence[int]] = None) -> pd.DataFrame:
    """Table 2: each variant trained on the same data; one row per variant. The baseline and Ada-DF (the
    headline) on ``seeds``, the other variants on ``variant_seeds`` (default: ``seeds``); each paired
    difference is over the seeds a variant shares with the baseline.

    Columns: the protocol card (``protocol.protocol_card``: runs, seeds, each metric's mean / std / 95 %
    interval, the paired difference to the baseline), the text columns best, last, mean_last_k,
    paper_best_acc (fraction; NaN when the data set has no paper numbers) and paper_source.
    """
    seeds = list(seeds) or [base_cfg.seed]
    variant_seeds = list(variant_seeds) if variant_seeds else seeds
    check_methods_available(methods)
    cfgs = [c for m in methods for c in _seed_cfgs(base_cfg, seeds if m in HEADLINE_METHODS else variant_seeds,
                                                   method=m)]
    runs = train_many(cfgs, runs_root, desc="ablation", reuse=reuse)
    table = summarise(results_table(runs), "method", order=methods)
    table.index.name = "variant"
    paper = ablation_numbers(base_cfg.dataset)
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
    scores = {Path(r.path): protocol.run_scores(r) for r in runs}
    df = pd.DataFrame([dict(param=param, value=v, seed=seed, run=path.name, **scores[path])
                       for param, v, seed, path in points])
    table = summarise(df, ["param", "value"], baseline=None)
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
    ``noise_files``: a list of paths or a mapping label -> path). A run's noise draw is its seed
    (``noise_seed = seed``), so the intervals over seeds cover the draw. One row per (method, noise) with best
    and last accuracy, the last epoch's accuracy on the labels it trained on (``train_acc``: above
    ``clean_share`` = 1 - rate, a method is fitting flipped labels, i.e. memorising), how many rows of the last
    class-distribution matrix fell back (``fallback_rows``, mean over seeds), the share of flipped samples
    recovered (``recovered_flipped``, last epoch; NaN when the method does not log it), and the paper's number
    where it has one."""
    methods = list(methods)
    check_methods_available(methods)
    seeds = list(seeds) if seeds else [base_cfg.seed]
    rows, cfgs = [], []
    points = _noise_points(rates, noise_files)
    for m in methods:
        for label, changes in points:
            for c in _seed_cfgs(base_cfg, seeds, method=m, **changes):
                if c.noise_rate > 0:      # each seed its own noise draw, so the intervals cover the draw too
                    c = dataclasses.replace(c, noise_seed=c.seed)
                cfgs.append(dataclasses.replace(c, run_dir=str(run_dir_for_config(runs_root, c))))
                rows.append(dict(method=m, noise=label))
    runs = train_many(cfgs, runs_root, desc="noise", reuse=reuse)
    for row, run in zip(rows, runs):
        row.update(seed=run.config.seed, **protocol.run_scores(run),
                   train_acc=_last_metric(run, "train_acc"), clean_share=1.0 - run.config.noise_rate,
                   fallback_rows=_last_fallback_rows(run),
                   recovered_flipped=_last_metric(run, "recovered_flipped"),
                   attn_flipped=_last_metric(run, "attn_flipped"), attn_clean=_last_metric(run, "attn_clean"))
    df = pd.DataFrame(rows)
    table = summarise(df, ["method", "noise"])
    extra = df.groupby(["method", "noise"], sort=False)[["train_acc", "clean_share", "fallback_rows",
                                                          "recovered_flipped", "attn_flipped", "attn_clean"]].mean()
    table = table.merge(extra.reset_index(), on=["method", "noise"], how="left")
    paper = PAPER_NUMBERS["noise"]
    table["paper_acc"] = [noise_number(m, n) for m, n in zip(table["method"], table["noise"])]
    table["paper_source"] = f"{paper['label']}, {paper['backbone']}, paper Table 4"
    # each run's accuracies, for the figure's per-seed dots (attrs: not written to the table's files)
    table.attrs["runs"] = df[["method", "noise", "seed", "last_acc", "best_acc"]].to_dict("records")
    # each run's per-epoch curve (test on the curve split, train on the labels it trained on), for the figure
    table.attrs["curves"] = [_curve(row, run.metrics) for row, run in zip(rows, runs)]
    return table


