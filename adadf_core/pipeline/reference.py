"""The committed reference ``results/reference/<dataset>/``: comparing a pipeline run with it, and promoting a run to it.

After a run, every table is compared with the reference's (``compare_with_reference``): equal where the run is
deterministic, otherwise whether each mean lies within the reference's 95 % interval; the comparison is printed
and saved. ``promote_reference`` copies a finished, complete, clean-tree run into the reference, with every
absolute path of this checkout replaced by a relative one. The pipeline itself never writes there.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from adadf_core.pipeline.notebook import display_path, project_root, reference_root
from adadf_core.pipeline.parameters import default_output, find_notebooks, parameter_differences, PipelineError
from adadf_core.pipeline.provenance import read_record, read_timings
from adadf_core.utils.fileio import unique_path, write_text


REFERENCE_FILES = ("README.md", "pipeline.json", "timings.csv", "tables", "figures", "notebooks")


# ---------------------------------------------------------------------------------------------
# the reference: comparison and promotion

SKIPPED_COLUMNS = ("seconds", "path", "run", "finished_at")


def _compare_table(ref, new, tol: float) -> tuple[str, str]:
    """(status, detail) for one table: ``identical``, ``within intervals`` or ``differs``."""
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
    result["backbone"] = _backbone_difference(ref_record, record)
    ref_commit = (ref_record.get("provenance") or {}).get("commit")
    lines = ["# Comparison with the committed reference", "",
             f"Reference: `{display_path(reference)}` (commit {ref_commit or 'not recorded'}); this run: commit "
             f"{(record.get('provenance') or {}).get('commit') or 'not recorded'}.", "",
             "Tables: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ".", ""]
    if result["backbone"]:
        lines += [result["backbone"], ""]
    if result["parameters"]:
        lines += ["Parameters differ from the reference's, so numbers are not expected to agree: " +
                  "; ".join(result["parameters"][:8]) + (" ..." if len(result["parameters"]) > 8 else ""), ""]
    lines += ["| table | status | detail |", "|---|---|---|"]
    lines += [f"| {n} | {s} | {d} |" for n, (s, d) in result["tables"].items()]
    write_text(output / "reference_comparison.md", "\n".join(lines) + "\n")
    return result


def _backbone_difference(reference: Mapping[str, Any], mine: Mapping[str, Any]) -> str:
    """A sentence when both records name the SynthFER backbone they started from and the files differ."""
    theirs, ours = reference.get("synthfer_backbone_sha256"), mine.get("synthfer_backbone_sha256")
    if not theirs or not ours or theirs == ours:
        return ""
    return (f"Your SynthFER backbone (sha256 {ours[:12]}) is not the reference's ({theirs[:12]}); every SynthFER run "
            "starts from it, so the numbers cannot agree. Delete data/synthfer_resnet18_pretrained.pth (and its "
            ".pool, .run and .json beside it) to pretrain it again with this code.")


def print_comparison(result: Mapping[str, Any], stream=None) -> None:
    stream = stream or sys.stdout
    if not result.get("reference"):
        print("no committed reference for this data set: nothing to compare with", file=stream)
        return
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result["counts"].items()))
    print(f"\ncompared with the reference {display_path(result['reference'])}: {counts}", file=stream)
    if result.get("backbone"):
        print(f"  {result['backbone']}", file=stream)
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
    status = {r["notebook"]: r.get("status") for r in read_timings(source / "timings.csv")}
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
