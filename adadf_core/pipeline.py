"""`adadf reproduce`: run every notebook in order with papermill and write ``results/<dataset>/``.

    adadf reproduce --dataset synthfer [--data-root PATH] [--output results/<dataset>] [--quick]
                    [--only 02,03] [--device auto] [--profile official] [-p NAME VALUE ...] [--force]
    adadf reproduce --dataset synthfer --compare     # compare results/<dataset> with the reference again
    adadf reproduce --dataset synthfer --promote     # make results/<dataset> the committed reference

What it writes (``<output>``, default ``<repo>/results/<dataset>``, or ``results/<dataset>-quick`` with
--quick; both git-ignored): ``notebooks/`` the executed notebooks, ``figures/*.png`` and
``tables/*.{csv,md}`` (written by the notebooks), ``runs/`` the training runs, ``README.md`` an index of
every table and figure with the provenance and the time per notebook, ``timings.csv``, ``pipeline.json``
(parameters and provenance) and ``reference_comparison.md``.

The reference. ``results/reference/<dataset>/`` holds the committed results of ``make reproduce`` at a
stated commit; the pipeline never writes there. After a run, every table is compared with the
reference's (``compare_with_reference``): equal where the run is deterministic, otherwise whether each
mean lies within the reference's 95 % interval; the comparison is printed and saved. ``--promote`` copies
a finished, complete, clean-tree run into the reference, with every absolute path of this checkout
replaced by a relative one.

Parameters. Every notebook gets the common parameters (dataset, data_root, output_dir, runs_dir, device,
profile, quick) and the data set's budget from ``budgets.BUDGETS`` (only the names its ``parameters`` cell
declares), then the ``-p`` values. A ``-p`` name that no selected notebook declares is an error. Paths
inside the repository are passed relative to it.

Overwrite rule. Run folders are named by configuration and never overwritten. ``pipeline.json`` records,
per notebook, every parameter it ran with, its own defaults included. If ``<output>`` holds results of a
notebook run with *other* parameters (the device and where the folder lies do not count), the pipeline
refuses to start. With ``--force`` the old index, tables, figures, executed notebooks and timings are first
moved to ``<output>/previous-<time>/``. Re-running with the same parameters refreshes the outputs in place
(finished runs are reused).
"""
from __future__ import annotations

import argparse
import ast
import datetime as _dt
import difflib
import io
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from . import __version__
from .budgets import BUDGETS, SYNTHFER_BACKBONE, budget_for
from .fileio import unique_path, write_text
from .notebook import (check_not_reference, display_path, parse_value, project_root, quick_folder,
                       reference_root)

NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"
RESERVED = ("dataset", "output_dir")          # set them with --dataset / --output, not -p
NOT_COMPARED = ("device",)                    # parameters that may change without refusing the output
LOCATION = ("output_dir", "runs_dir")         # compared relative to the output folder, not as paths
REFERENCE_FILES = ("README.md", "pipeline.json", "timings.csv", "tables", "figures", "notebooks")

class PipelineError(RuntimeError):
    """The pipeline could not start (bad parameters, results of another configuration)."""


class NotebookFailedError(RuntimeError):
    """A notebook raised; carries the notebook name, cell index, cell source, error name and value."""

    def __init__(self, notebook: str, cell_index, source: str, ename: str, evalue: str, output: Path):
        self.notebook, self.cell_index, self.source = notebook, cell_index, source
        self.ename, self.evalue, self.output = ename, evalue, output
        super().__init__(f"{notebook} failed in cell {cell_index}: {ename}: {evalue}")


@dataclass
class Result:
    output: Path
    timings: list[dict] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)
    notebooks: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# notebooks and their parameters

def _matches(book: Path, wanted: str) -> bool:
    wanted = str(wanted)
    return book.name[:2] == wanted.zfill(2) if wanted.isdigit() else wanted in (book.stem, book.name)


def find_notebooks(notebooks_dir: str | Path | None = None, only: Sequence[str] | str | None = None) -> list[Path]:
    """Notebooks ``NN_*.ipynb`` in name order; ``only`` keeps those whose number (or name) is listed."""
    folder = Path(notebooks_dir) if notebooks_dir else project_root() / "notebooks"
    books = sorted(folder.glob(NOTEBOOK_PATTERN))
    if not books:
        raise PipelineError(f"no notebooks matching {NOTEBOOK_PATTERN} in {folder}")
    if only:
        wanted = [w.strip() for w in (only.split(",") if isinstance(only, str) else only) if str(w).strip()]
        missing = [w for w in wanted if not any(_matches(b, w) for b in books)]
        if missing:
            raise PipelineError(f"--only {','.join(missing)}: no such notebook; have "
                                f"{', '.join(b.name for b in books)}")
        books = [b for b in books if any(_matches(b, w) for w in wanted)]
    return books


def notebook_parameters(path: str | Path) -> dict[str, str]:
    """Name -> default text of every variable assigned in the notebook's cell tagged ``parameters``.

    Parsed with ``ast`` (papermill's own inspection skips lines that have a second "=", e.g. in a comment).
    """
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise PipelineError(f"{Path(path).name} has no code cell tagged 'parameters'")
    src = "\n".join(line for line in cells[0].source.splitlines() if not line.lstrip().startswith(("%", "!")))
    try:
        tree = ast.parse(src)
    except SyntaxError as exc:
        raise PipelineError(f"{Path(path).name}: the parameters cell does not parse ({exc})") from exc
    params: dict[str, str] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else []
        for t in targets:
            if isinstance(t, ast.Name):
                params[t.id] = ast.get_source_segment(src, node.value) or ""
    return params


def validate_overrides(overrides: Mapping[str, Any], declared: Mapping[str, Mapping[str, Any]]) -> None:
    """Error on a ``-p`` name that no selected notebook declares (papermill would only warn)."""
    known = sorted(set().union(*[set(d) for d in declared.values()])) if declared else []
    for name in overrides:
        if name in RESERVED:
            raise PipelineError(f"-p {name}: set it with --{'output' if name == 'output_dir' else name}")
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise PipelineError(f"-p {name}: no selected notebook has a parameter called {name!r}.{hint} "
                                f"Known parameters: {', '.join(known)}")


# ---------------------------------------------------------------------------------------------
# provenance, index, overwrite rule

def machine_info(device: str = "auto") -> dict[str, Any]:
    try:
        from .device import environment, select_device
        return environment(select_device(device))
    except Exception as exc:  # the index is still useful without torch details
        return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                "python": platform.python_version(), "device": f"{device} ({type(exc).__name__}: {exc})"}


def git_state(root: Path | None = None) -> dict[str, Any]:
    """``commit`` (HEAD of the checkout, or None outside git) and ``dirty`` (tracked files changed, or
    untracked files that git does not ignore)."""
    import subprocess
    root = root or project_root()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def provenance(device: str = "auto", command: str = "") -> dict[str, Any]:
    """What a result was computed with: git commit and whether the tree was dirty, package version,
    library versions (torch, torchvision, CUDA), the device and the command."""
    info = {**git_state(), "adadf": __version__, "command": command, **machine_info(device)}
    try:
        import torch
        info["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    except ImportError:
        info["cuda"] = None
    return info


def _read_timings(path: Path) -> list[dict]:
    import csv
    if not path.is_file():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


def write_timings(output: Path, rows: list[dict]) -> Path:
    """Merge this invocation's rows into ``timings.csv`` (notebooks not run now keep their old row)."""
    import csv
    path = output / "timings.csv"
    merged = {r["notebook"]: r for r in _read_timings(path)}
    merged.update({r["notebook"]: r for r in rows})
    cols = ["notebook", "seconds", "status", "finished_at"]
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for name in sorted(merged):
        w.writerow(merged[name])
    write_text(path, text.getvalue())
    return path


def write_index(output: Path, record: Mapping[str, Any]) -> Path:
    """``<output>/README.md``: provenance, parameters, time per notebook, the comparison with the
    reference, every table inline and every figure."""
    output = Path(output)
    timings = _read_timings(output / "timings.csv")
    prov = record.get("provenance", {})
    lines = [f"# Ada-DF reproduction results: {record.get('dataset')}", "",
             f"Written by `adadf reproduce` on {record.get('written', '')}.", "",
             f"Command: `{prov.get('command', '')}`", "", "## Provenance", ""]
    lines += [f"- {k}: {v}" for k, v in prov.items() if k != "command"]
    lines += ["", "## Parameters", "", "```json", json.dumps(record.get("parameters", {}), indent=2,
                                                             sort_keys=True, default=str), "```", "",
              "## Notebooks", "", "| notebook | status | seconds | executed copy |", "|---|---|---|---|"]
    for r in timings:
        nb = Path("notebooks") / r["notebook"]
        link = f"[{nb}]({nb})" if (output / nb).is_file() else ""
        lines.append(f"| {r['notebook']} | {r.get('status', '')} | {float(r['seconds']):.1f} | {link} |")
    total = sum(float(r["seconds"]) for r in timings)
    lines += ["", f"Total: {total:.1f} s ({total / 60:.1f} min).", ""]
    lines += _resolution_lines(output)
    if (output / "reference_comparison.md").is_file():
        lines += ["## Compared with the committed reference", "",
                  (output / "reference_comparison.md").read_text().split("\n", 2)[-1].rstrip(), ""]
    lines += ["## Tables", ""]
    tables = sorted((output / "tables").glob("*.md"))
    for t in tables:
        lines += [f"### {t.stem}", "", f"([CSV](tables/{t.stem}.csv))", "", t.read_text().rstrip(), ""]
    if not tables:
        lines += ["(none)", ""]
    lines += ["## Figures", ""]
    figures = sorted((output / "figures").glob("*.png"))
    for f in figures:
        lines += [f"### {f.stem}", "", f"![{f.stem}](figures/{f.name})", ""]
    if not figures:
        lines += ["(none)", ""]
    path = output / "README.md"
    write_text(path, "\n".join(lines))
    return path


def _resolution_lines(output: Path) -> list[str]:
    """The index's "Resolution" section: per protocol card with paired differences, the largest half-width
    of the 95 % intervals of a method's difference to the baseline (the smallest gap the budget resolves)."""
    import pandas as pd

    from .protocol import column_title, half_width

    selections = ("best_acc", "last_acc", "mean_last_k_acc")
    rows = []
    for path in sorted((output / "tables").glob("*.csv")):
        if "diff_last_acc_lo" not in pd.read_csv(path, nrows=0).columns:
            continue
        card = pd.read_csv(path)
        widths = [half_width(card, sel) for sel in selections]
        if not all(pd.isna(w) for w in widths):
            seeds = int(card["pairs"].max()) if "pairs" in card else 0
            rows.append(f"| {path.stem} | {seeds} | " + " | ".join("" if pd.isna(w) else f"±{100 * w:.2f}"
                                                                  for w in widths) + " |")
    if not rows:
        return []
    return ["## Resolution", "", "The largest half-width, in accuracy points, of the 95 % intervals of the paired "
            "differences to the baseline (same seeds): gaps smaller than this are not resolved at this budget.", "",
            "| table | seeds paired | " + " | ".join(column_title(s) for s in selections) + " |",
            "|---|---|---|---|---|", *rows, ""]


def effective_parameters(declared: Mapping[str, str], passed: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter a notebook runs with: its own defaults (the parameters cell's values) overlaid
    with what the pipeline passes."""
    values = {name: parse_value(text) for name, text in declared.items()}
    values.update({k: v for k, v in passed.items() if k in declared})
    return json.loads(json.dumps(values, default=str))


def _location_free(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` without what may change freely (the device) and with the runs folder taken relative to
    the output folder: where the output folder lies does not decide the results."""
    params = {k: v for k, v in params.items() if k not in NOT_COMPARED}
    out, runs = params.pop("output_dir", None), params.get("runs_dir")
    if out and runs:
        out_path = Path(out) if Path(out).is_absolute() else project_root() / out
        runs_path = Path(runs) if Path(runs).is_absolute() else project_root() / runs
        if runs_path.is_relative_to(out_path):
            params["runs_dir"] = runs_path.relative_to(out_path).as_posix()
    return params


def parameter_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two ``pipeline.json`` records, per notebook that both ran, every parameter
    compared (defaults included). Records without per-notebook parameters compare their shared names."""
    diffs = [] if old.get("dataset") == new.get("dataset") else \
        [f"dataset: {old.get('dataset')!r} -> {new.get('dataset')!r}"]
    a, b = old.get("notebook_parameters"), new.get("notebook_parameters")
    if a is None or b is None:
        pa, pb = _location_free(old.get("parameters", {})), _location_free(new.get("parameters", {}))
        return diffs + [f"{k}: {pa[k]!r} -> {pb[k]!r}" for k in sorted(set(pa) & set(pb)) if pa[k] != pb[k]]
    for book in sorted(set(a) & set(b)):
        pa, pb = _location_free(a[book]), _location_free(b[book])
        for k in sorted(set(pa) | set(pb)):
            if pa.get(k, "<unset>") != pb.get(k, "<unset>"):
                diffs.append(f"{book}: {k}: {pa.get(k, '<unset>')!r} -> {pb.get(k, '<unset>')!r}")
    return diffs


def read_record(folder: Path) -> dict[str, Any]:
    """``<folder>/pipeline.json`` (parameters and provenance of a pipeline run), or {} when there is none."""
    path = Path(folder) / "pipeline.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def check_output(output: Path, record: Mapping[str, Any], force: bool) -> Optional[Path]:
    """Apply the overwrite rule (module docstring). Returns the folder old results were moved to, if any."""
    previous = read_record(output)
    if not previous:
        return None
    diffs = parameter_differences(previous, record)
    if not diffs:
        return None
    if not force:
        raise PipelineError(f"{output} holds results of a run with other parameters ({'; '.join(diffs)}). "
                            "Choose another --output, or pass --force to move the old index, tables, "
                            "figures and notebooks to a previous-<time>/ folder (runs are kept).")
    dest = unique_path(output / f"previous-{time.strftime('%Y%m%d-%H%M%S')}")
    dest.mkdir()
    for name in ("README.md", "timings.csv", "pipeline.json", "tables", "figures", "notebooks",
                 "reference_comparison.md"):
        if (output / name).exists():
            shutil.move(str(output / name), str(dest / name))
    return dest


# ---------------------------------------------------------------------------------------------
# the reference: comparison and promotion

SKIPPED_COLUMNS = ("seconds", "path", "run", "finished_at")


def _compare_table(ref, new, tol: float) -> tuple[str, str]:
    """(status, detail) for one table: ``identical``, ``within intervals`` or ``differs``."""
    import numpy as np
    import pandas as pd

    if list(ref.columns) != list(new.columns) or len(ref) != len(new):
        return "differs", f"shape or columns differ ({ref.shape} vs {new.shape})"
    cols = [c for c in ref.columns if c not in SKIPPED_COLUMNS]
    numeric = [c for c in cols if pd.api.types.is_numeric_dtype(ref[c]) and pd.api.types.is_numeric_dtype(new[c])]
    text_diff = [c for c in cols if c not in numeric and not ref[c].astype(str).equals(new[c].astype(str))]
    delta = {c: float(np.nanmax(np.abs(ref[c].to_numpy(float) - new[c].to_numpy(float)))
                      if len(ref) and not (ref[c].isna().all() and new[c].isna().all()) else 0.0)
             for c in numeric}
    nan_moved = [c for c in numeric if not ref[c].isna().equals(new[c].isna())]
    worst = max(delta.items(), key=lambda kv: kv[1], default=(None, 0.0))
    if worst[1] <= tol and not nan_moved and not text_diff:
        return "identical", ""
    means = [c[:-3] for c in ref.columns if c.endswith("_lo") and f"{c[:-3]}_hi" in ref.columns
             and c[:-3] in ref.columns and not c.startswith("diff_")]
    if means and not text_diff:
        outside = [f"{m} row {i}" for m in means for i in range(len(ref))
                   if not np.isnan(ref[f"{m}_lo"].iloc[i]) and
                   not (ref[f"{m}_lo"].iloc[i] - tol <= new[m].iloc[i] <= ref[f"{m}_hi"].iloc[i] + tol)]
        if not outside:
            return "within intervals", f"largest difference {worst[1]:.4f} in {worst[0]}; every mean within the reference's 95 % interval"
        return "differs", f"outside the reference's 95 % interval: {', '.join(outside[:6])}" + \
            (f" (+{len(outside) - 6} more)" if len(outside) > 6 else "")
    detail = f"largest difference {worst[1]:.4f} in {worst[0]}" if worst[0] else ""
    if text_diff:
        detail += (", " if detail else "") + f"text differs in {', '.join(text_diff[:4])}"
    return "differs", detail


def compare_with_reference(output: str | Path, reference: str | Path | None = None,
                           dataset: str | None = None, tol: float = 1e-4) -> dict[str, Any]:
    """Compare every table of ``output`` with the reference's; write ``<output>/reference_comparison.md``.

    Returns ``{"reference", "parameters" (differences), "tables": {name: (status, detail)}, "counts"}``;
    status is ``identical`` (every number within ``tol``), ``within intervals`` (a protocol card whose
    means all lie within the reference's 95 % intervals), ``differs``, ``missing`` (in the run) or ``new``
    (not in the reference). No reference: ``{"reference": None}`` and nothing written."""
    import pandas as pd

    output = Path(output)
    record = read_record(output)
    dataset = dataset or record.get("dataset")
    reference = Path(reference) if reference else reference_root() / str(dataset)
    if not (reference / "tables").is_dir() or reference.resolve() == output.resolve():
        return {"reference": None}
    ref_record = read_record(reference)
    ran = {p.stem for p in (output / "tables").glob("*.csv")}
    result: dict[str, Any] = {"reference": reference, "parameters": parameter_differences(ref_record, record),
                              "tables": {}}
    for path in sorted((reference / "tables").glob("*.csv")):
        if path.stem not in ran:
            result["tables"][path.stem] = ("missing", "not produced by this run")
            continue
        result["tables"][path.stem] = _compare_table(pd.read_csv(path), pd.read_csv(output / "tables" / path.name), tol)
    for name in sorted(ran - {p.stem for p in (reference / "tables").glob("*.csv")}):
        result["tables"][name] = ("new", "not in the reference")
    counts: dict[str, int] = {}
    for status, _ in result["tables"].values():
        counts[status] = counts.get(status, 0) + 1
    result["counts"] = counts
    ref_commit = (ref_record.get("provenance") or {}).get("commit")
    lines = ["# Comparison with the committed reference", "",
             f"Reference: `{display_path(reference)}` (commit {ref_commit or 'not recorded'}); this run: commit "
             f"{(record.get('provenance') or {}).get('commit') or 'not recorded'}.", "",
             "Tables: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ".", ""]
    if result["parameters"]:
        lines += ["Parameters differ from the reference's, so numbers are not expected to agree: " +
                  "; ".join(result["parameters"][:8]) + (" ..." if len(result["parameters"]) > 8 else ""), ""]
    lines += ["| table | status | detail |", "|---|---|---|"]
    lines += [f"| {n} | {s} | {d} |" for n, (s, d) in result["tables"].items()]
    write_text(output / "reference_comparison.md", "\n".join(lines) + "\n")
    return result


def print_comparison(result: Mapping[str, Any], stream=None) -> None:
    stream = stream or sys.stdout
    if not result.get("reference"):
        print("no committed reference for this data set: nothing to compare with", file=stream)
        return
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result["counts"].items()))
    print(f"\ncompared with the reference {display_path(result['reference'])}: {counts}", file=stream)
    if result["parameters"]:
        print(f"  (parameters differ from the reference's: {len(result['parameters'])} difference(s), "
              f"e.g. {result['parameters'][0]})", file=stream)
    for name, (status, detail) in result["tables"].items():
        if status != "identical":
            print(f"  {name:<40} {status}{': ' + detail if detail else ''}", file=stream)


def _relative_text(text: str, replacements: Sequence[tuple[str, str]]) -> str:
    for old, new in replacements:
        text = text.replace(old, new)
    return text


def promote_reference(source: str | Path, dataset: str | None = None, dest: str | Path | None = None,
                      notebooks_dir: str | Path | None = None) -> Path:
    """Make the finished run in ``source`` the committed reference ``results/reference/<dataset>``.

    Refused when the run is quick, incomplete (a notebook missing or not ``ok``) or was made from a dirty
    tree. Copies ``REFERENCE_FILES`` (not the runs), with every absolute path of this checkout and of
    ``source`` written relative (``.`` = the repository root), then swaps the folder in whole."""
    source = Path(source).resolve()
    if not (source / "pipeline.json").is_file():
        raise PipelineError(f"{source} holds no pipeline.json: run `adadf reproduce` first")
    record = read_record(source)
    dataset = dataset or record.get("dataset")
    prov = record.get("provenance", {})
    problems = []
    if any(p.get("quick") for p in record.get("notebook_parameters", {}).values()):
        problems.append("it is a quick run")
    all_books = [b.name for b in find_notebooks(notebooks_dir)]
    status = {r["notebook"]: r.get("status") for r in _read_timings(source / "timings.csv")}
    missing = [b for b in all_books if status.get(b) != "ok"]
    if missing:
        problems.append(f"notebooks not run or not ok: {', '.join(missing)}")
    if prov.get("dirty") or not prov.get("commit"):
        problems.append(f"it was made from {'a dirty tree' if prov.get('dirty') else 'no git commit'} "
                        f"(commit {prov.get('commit')})")
    if problems:
        raise PipelineError(f"{source} cannot become the reference: {'; '.join(problems)}")
    dest = Path(dest) if dest else reference_root() / str(dataset)
    root = project_root().resolve()
    # the run's own folder reads as the default output folder a user's rerun writes to
    books_dir = str(Path(notebooks_dir).resolve()) if notebooks_dir else str(root / "notebooks")
    replacements = sorted({(str(source), display_path(default_output(str(dataset)))), (books_dir, "notebooks"),
                           (str(root) + "/", ""), (str(root), ".")},
                          key=lambda kv: -len(kv[0]))
    staging = unique_path(dest.with_name(f".{dest.name}.staging"))
    staging.mkdir(parents=True)
    for name in REFERENCE_FILES:
        src = source / name
        files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else []
        for f in files:
            target = staging / f.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            if f.suffix in (".md", ".json", ".csv", ".ipynb", ".txt"):
                target.write_text(_relative_text(f.read_text(), replacements))
            else:
                shutil.copy2(f, target)
    old = None
    if dest.exists():
        old = unique_path(dest.with_name(f".{dest.name}.old"))
        dest.rename(old)
    staging.rename(dest)
    if old:
        shutil.rmtree(old)
    return dest


# ---------------------------------------------------------------------------------------------
# running

def _print_failure(err: NotebookFailedError, stream=None) -> None:
    bar = "-" * 72
    stream = stream or sys.stderr
    print(f"\n{bar}\nnotebook {err.notebook} FAILED in cell {err.cell_index} of the executed copy\n{bar}\ncell source:\n"
          f"{err.source}\n{bar}\n{err.ename}: {err.evalue}\n{bar}\n"
          f"the executed notebook (with the traceback) is at {err.output}", file=stream)


def notebook_inputs(declared: Mapping[str, Mapping[str, str]], dataset: str, data_root: str | None,
                    output: Path, quick: bool, device: str, profile: str,
                    params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Notebook name -> the parameters the pipeline passes it: the common ones, the data set's budget
    (``budgets.budget_for``; None = the notebook's own default) and the ``-p`` values, each notebook only
    the names its parameters cell declares."""
    common = dict(dataset=dataset, data_root=str(Path(data_root).expanduser().resolve()) if data_root else None,
                  output_dir=display_path(output), runs_dir=display_path(Path(output) / "runs"), device=device,
                  profile=profile, quick=bool(quick))
    base = {**common, **{k: v for k, v in budget_for(dataset, quick).items() if v is not None}, **params}
    return {name: {k: v for k, v in base.items() if k in names} for name, names in declared.items()}


def default_output(dataset: str, quick: bool = False) -> Path:
    """``<repo>/results/<dataset>`` (``-quick`` appended for quick runs)."""
    out = project_root() / "results" / dataset
    return quick_folder(out) if quick else out


def reproduce(dataset: str = "synthfer", data_root: str | None = None, output: str | Path | None = None,
              quick: bool = False, only: Sequence[str] | str | None = None, device: str = "auto",
              profile: str = "official", params: Mapping[str, Any] | None = None, force: bool = False,
              notebooks_dir: str | Path | None = None, kernel_name: str = "python3",
              progress: bool = True, command: str = "", compare: bool = True,
              devices: Sequence[str] | str | None = None) -> Result:
    """Execute the notebooks in order. Raises ``PipelineError`` before running anything when the
    parameters are wrong, and ``NotebookFailedError`` (after printing the cell and the error) when a
    notebook fails; outputs of notebooks that finished stay, and the index is written either way. After
    a complete run the tables are compared with the committed reference (``compare_with_reference``).
    ``devices`` (``"cuda:0,cuda:1"``): the studies' independent runs go one process per device
    (``studies.train_many``), the same runs as in sequence; the rest of the work uses the first device."""
    from .studies import parse_devices
    params = dict(params or {})
    try:
        devices = parse_devices(devices)
    except ValueError as exc:
        raise PipelineError(f"--devices: {exc}") from None
    if devices and (device or "auto").strip().lower() not in ("auto", devices[0]):
        raise PipelineError(f"--device {device} and --devices {','.join(devices)} disagree; expected one of them "
                            "(the rest of the work runs on the first of --devices)")
    if devices:
        device = devices[0]
    if dataset != "synthfer" and not data_root:
        raise PipelineError(f"--dataset {dataset} needs --data-root PATH (only synthfer is generated)")
    books = find_notebooks(notebooks_dir, only)
    declared = {b.name: notebook_parameters(b) for b in books}
    validate_overrides(params, declared)
    if output is None:
        output = default_output(dataset, quick)
    output = Path(output).expanduser()
    output = (output if output.is_absolute() else Path.cwd() / output).resolve()
    if quick:
        output = quick_folder(output)
    try:
        check_not_reference(output)
    except ValueError as exc:
        raise PipelineError(str(exc)) from None
    per_book = notebook_inputs(declared, dataset, data_root, output, quick, device, profile, params)
    used = {k: v for name in per_book for k, v in per_book[name].items()}
    command = command or f"reproduce(dataset={dataset!r})"
    record = {"dataset": dataset, "parameters": used, "notebooks": [b.name for b in books],
              "notebook_parameters": {name: effective_parameters(declared[name], per_book[name])
                                      for name in per_book},
              "provenance": {**provenance(device, command), "devices": devices or [device]},
              "written": _dt.datetime.now().isoformat(timespec="seconds")}
    output.mkdir(parents=True, exist_ok=True)
    moved = check_output(output, record, force)
    if moved:
        print(f"--force: moved the previous results to {moved}")
    elif (output / "pipeline.json").is_file():   # same configuration: keep what earlier --only runs recorded
        old = read_record(output)
        record["parameters"] = {**old.get("parameters", {}), **record["parameters"]}
        record["notebook_parameters"] = {**old.get("notebook_parameters", {}), **record["notebook_parameters"]}
        record["notebooks"] = sorted(set(old.get("notebooks", [])) | set(record["notebooks"]))
    for sub in ("notebooks", "figures", "tables", "runs"):
        (output / sub).mkdir(exist_ok=True)
    write_text(output / "pipeline.json", json.dumps(record, indent=2, sort_keys=True, default=str))
    result = Result(output=output)
    _pretrain_if_asked(per_book, result, device, progress)
    failure = _run_notebooks(books, per_book, output, result, kernel_name, progress, devices)
    write_timings(output, result.timings)
    comparison = compare_with_reference(output, dataset=dataset) if compare and not failure else {"reference": None}
    write_index(output, record)
    result.figures = sorted((output / "figures").glob("*.png"))
    result.tables = sorted((output / "tables").glob("*.csv"))
    if failure:
        _print_failure(failure)
        raise failure
    _print_summary(result)
    if compare:
        print_comparison(comparison)
    return result


def _run_notebooks(books: Sequence[Path], per_book: Mapping[str, dict], output: Path, result: Result,
                   kernel_name: str, progress: bool, devices: Sequence[str] = ()) -> Optional[NotebookFailedError]:
    """Execute ``books`` in order into ``<output>/notebooks`` (``ADADF_PROGRESS=lines`` for their kernels:
    executed notebooks read as logs; ``ADADF_DEVICES`` when several ``devices`` share the studies' runs);
    timings go to ``result``. Stops at, and returns, the first failure."""
    import papermill
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    from .progress import MODE_VARIABLE, bar
    from .studies import DEVICES_VARIABLE

    failure: Optional[NotebookFailedError] = None
    saved = {name: os.environ.get(name) for name in (MODE_VARIABLE, DEVICES_VARIABLE)}
    os.environ[MODE_VARIABLE] = "lines"
    if len(devices) > 1:
        os.environ[DEVICES_VARIABLE] = ",".join(devices)
    else:
        os.environ.pop(DEVICES_VARIABLE, None)
    books_bar = bar(books, desc="notebooks", unit="nb", disable=not progress)
    try:
        for book in books_bar:
            books_bar.set_postfix_str(book.name)
            out_nb = output / "notebooks" / book.name
            start = time.perf_counter()
            status = "ok"
            try:
                papermill.execute_notebook(str(book), str(out_nb), parameters=per_book[book.name],
                                           kernel_name=kernel_name, cwd=str(book.parent), progress_bar=False)
            except PapermillExecutionError as exc:
                status = "failed"
                failure = NotebookFailedError(book.name, exc.cell_index, exc.source, exc.ename, exc.evalue, out_nb)
            except DeadKernelError as exc:        # the kernel was killed (kill -9, out of memory)
                status = "kernel died"
                failure = NotebookFailedError(book.name, "?", "(the cell that was running when the kernel died)",
                                              "DeadKernelError", f"the kernel running {book.name} died "
                                              f"(killed, or out of memory): {str(exc).splitlines()[0]}", out_nb)
            seconds = time.perf_counter() - start
            result.timings.append(dict(notebook=book.name, seconds=f"{seconds:.1f}", status=status,
                                       finished_at=_dt.datetime.now().isoformat(timespec="seconds")))
            result.notebooks.append(out_nb)
            print(f"{book.name}: {status} in {seconds:.1f} s", file=sys.stderr)
            if failure:
                break
    finally:
        books_bar.close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return failure


def _pretrain_if_asked(per_book: dict, result: Result, device: str, progress: bool) -> None:
    """Pretrain the ``synthfer-backbone`` file before the notebooks (once; then reused), so that its time
    is its own row; the notebooks resolve the token to the same file (``notebook.resolve_pretrained``)."""
    if not any(book.get("pretrained") == SYNTHFER_BACKBONE for book in per_book.values()):
        return
    from .pretrain import default_path, synthfer_backbone

    if default_path().is_file():
        return
    start = time.perf_counter()
    print("pretraining the SynthFER ResNet-18 (the MS-Celeb-1M stand-in; reused once it exists)",
          file=sys.stderr)
    synthfer_backbone(device=device, progress=progress)
    result.timings.append(dict(notebook="pretrain-synthfer", seconds=f"{time.perf_counter() - start:.1f}",
                               status="ok", finished_at=_dt.datetime.now().isoformat(timespec="seconds")))


def _print_summary(result: Result) -> None:
    total = sum(float(t["seconds"]) for t in result.timings)
    print(f"\nresults in {result.output} ({total:.1f} s)")
    for t in result.timings:
        print(f"  {t['notebook']:<34} {float(t['seconds']):8.1f} s  {t['status']}")
    print(f"  {len(result.figures)} figures in figures/, {len(result.tables)} tables in tables/, "
          f"{len(result.notebooks)} executed notebooks in notebooks/")
    print(f"  index: {result.output / 'README.md'}")


# ---------------------------------------------------------------------------------------------
# CLI

def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adadf reproduce",
                                description="Run the notebooks with papermill and write results/<dataset>/.",
                                epilog="Overwrite rule: an output folder holding results of other parameters "
                                       "is refused unless --force (old files move to previous-<time>/).")
    p.add_argument("--dataset", default="synthfer", choices=sorted(BUDGETS), help="the data set (default synthfer)")
    p.add_argument("--data-root", default=None, help="data set root (synthfer: default generated copy)")
    p.add_argument("--output", default=None, help="results folder (default results/<dataset>, "
                                                   "results/<dataset>-quick with --quick)")
    p.add_argument("--quick", action="store_true", help="tiny runs (a smoke test, minutes on a CPU)")
    p.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 02,03")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--devices", default=None, metavar="LIST",
                   help="several devices, e.g. cuda:0,cuda:1: the studies' independent runs go one process per "
                        "device, the same runs as in sequence (the rest uses the first)")
    p.add_argument("--profile", default="official", choices=["official", "paper"],
                   help="official (the authors' code, default) | paper (the text)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a notebook parameter (JSON or Python literal value); repeatable")
    p.add_argument("--force", action="store_true", help="replace results of other parameters (old ones kept)")
    p.add_argument("--notebooks", default=None, help="notebooks folder (default <repo>/notebooks)")
    p.add_argument("--list", action="store_true", help="list the notebooks and their parameters, run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-compare", action="store_true", help="do not compare the tables with the reference")
    p.add_argument("--compare", action="store_true",
                   help="run nothing: compare the output folder's tables with results/reference/<dataset>")
    p.add_argument("--promote", action="store_true",
                   help="run nothing: make the output folder (a complete run from a clean tree) the "
                        "committed reference results/reference/<dataset>")
    return p


def cli_main(argv: Optional[list[str]] = None) -> int:
    args = build_arg_parser().parse_args(argv)
    try:
        if args.list:
            for book in find_notebooks(args.notebooks, args.only):
                params = notebook_parameters(book)
                print(f"{book.name}: " + ", ".join(f"{k}={v}" for k, v in params.items()))
            return 0
        if args.compare or args.promote:
            output = Path(args.output) if args.output else default_output(args.dataset, args.quick)
            if args.promote:
                print(f"reference written: {promote_reference(output, args.dataset)}")
            print_comparison(compare_with_reference(output, dataset=args.dataset))
            return 0
        params = {name: parse_value(value) for name, value in args.parameter}
        reproduce(dataset=args.dataset, data_root=args.data_root, output=args.output, quick=args.quick,
                  only=args.only, device=args.device, profile=args.profile, params=params, force=args.force,
                  notebooks_dir=args.notebooks, progress=not args.no_progress, compare=not args.no_compare,
                  devices=args.devices,
                  command="adadf reproduce " + " ".join(argv if argv is not None else sys.argv[2:]))
    except PipelineError as exc:
        print(f"adadf reproduce: {exc}", file=sys.stderr)
        return 2
    except NotebookFailedError:
        return 1
    return 0
