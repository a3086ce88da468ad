"""What a pipeline run records beside its results: the machine, the git state and the command (``pipeline.json``),
the time per notebook (``timings.csv``), the results index (``README.md``), and the overwrite rule.

Overwrite rule. Run folders are named by configuration and never overwritten. ``pipeline.json`` records, per
notebook, every parameter it ran with, its own defaults included. If ``<output>`` holds results of a notebook run
with *other* parameters (the device and where the folder lies do not count), the pipeline refuses to start. With
``--force`` the old index, tables, figures, executed notebooks and timings are first moved to
``<output>/previous-<time>/``. Re-running with the same parameters refreshes the outputs in place (finished runs
are reused).
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import pandas as pd
import torch

from adadf_core import __version__
from adadf_core.pipeline.notebook import project_root
from adadf_core.pipeline.captions import CAPTIONS
from adadf_core.pipeline.parameters import parameter_differences, PipelineError
from adadf_core.pipeline.summary import headline
from adadf_core.runtime.device import environment, select_device
from adadf_core.studies.protocol import column_title, half_width
from adadf_core.utils.fileio import unique_path, write_text


# ---------------------------------------------------------------------------------------------
# provenance, index, overwrite rule

def machine_info(device: str = "auto") -> dict[str, Any]:
    try:
        return environment(select_device(device))
    except Exception as exc:  # the index is still useful without torch details
        return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                "python": platform.python_version(), "device": f"{device} ({type(exc).__name__}: {exc})"}


def git_state(root: Path | None = None) -> dict[str, Any]:
    """``commit`` (HEAD of the checkout, or None outside git) and ``dirty`` (tracked files changed, or
    untracked files that git does not ignore)."""
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
        info["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    except ImportError:
        info["cuda"] = None
    return info


def read_timings(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


def write_timings(output: Path, rows: list[dict]) -> Path:
    """Merge this invocation's rows into ``timings.csv`` (notebooks not run now keep their old row)."""
    path = output / "timings.csv"
    merged = {r["notebook"]: r for r in read_timings(path)}
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
    timings = read_timings(output / "timings.csv")
    prov = record.get("provenance", {})
    lines = [f"# Ada-DF reproduction results: {record.get('dataset')}", ""]
    top = headline(output)
    if top:
        lines += ["## Headline", "", *top, "", "(docs/RESULTS.md says how to read an interval and a verdict.)", ""]
    lines += [f"Written by `adadf reproduce`: started {_started(timings) or record.get('written', '')}, finished "
              f"{max(str(r['finished_at']) for r in timings) if timings else 'not yet'}.", "",
              f"Command: `{prov.get('command', '')}`", "",
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
        lines += [f"### {f.stem}", "", *([CAPTIONS[f.stem], ""] if f.stem in CAPTIONS else []),
                  f"![{f.stem}](figures/{f.name})", ""]
    if not figures:
        lines += ["(none)", ""]
    lines += ["## Provenance and parameters", "", *[f"- {k}: {v}" for k, v in prov.items() if k != "command"], "",
              "<details><summary>every parameter (JSON)</summary>", "", "```json",
              json.dumps(record.get("parameters", {}), indent=2, sort_keys=True, default=str), "```", "",
              "</details>", ""]
    path = output / "README.md"
    write_text(path, "\n".join(lines))
    return path


def _started(timings: list[dict]) -> str:
    """When the first timed step started: its finish time less its seconds ("" without timings)."""
    if not timings or not timings[0].get("finished_at"):
        return ""
    first = min(timings, key=lambda r: str(r["finished_at"]))
    start = _dt.datetime.fromisoformat(str(first["finished_at"])) - _dt.timedelta(seconds=float(first["seconds"]))
    return start.isoformat(timespec="seconds")


def _resolution_lines(output: Path) -> list[str]:
    """The index's "Resolution" section: per protocol card with paired differences, the largest half-width
    of the 95 % intervals of a method's difference to the baseline (the smallest gap the budget resolves)."""
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
