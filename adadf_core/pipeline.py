"""`adadf reproduce`: run every notebook in order with papermill and write ``results/<dataset>/``.

    adadf reproduce --dataset synthfer [--data-root PATH] [--output results/<dataset>] [--quick]
                    [--only 02,03] [--device auto] [--profile official] [-p NAME VALUE ...] [--force]

What it writes (``<output>``, default ``results/<dataset>``, or ``results/<dataset>-quick`` with --quick):
``notebooks/`` the executed notebooks, ``figures/*.png`` and ``tables/*.{csv,md}`` (written by the
notebooks), ``runs/`` the training runs, ``README.md`` an index of every table and figure with the
machine and the time per notebook, ``timings.csv``, and ``pipeline.json`` the parameters used.

Parameters. Every notebook gets the common parameters (dataset, data_root, output_dir, runs_dir, device,
profile, quick) and the data set's budget from ``budgets.BUDGETS`` (only the names its ``parameters`` cell
declares), then the ``-p`` values. A ``-p`` name that no selected notebook declares is an error.

Overwrite rule. Run folders are named by configuration (studies.run_dir_for) and never overwritten.
If ``<output>`` holds results of a pipeline run with *other* parameters (``pipeline.json`` differs; the
device and the --only selection do not count), the pipeline refuses to start. With ``--force`` the old
index, tables, figures, executed notebooks and timings are first moved to ``<output>/previous-<time>/``.
Re-running with the same parameters refreshes the outputs in place (finished runs are reused).
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

from .budgets import BUDGETS, SYNTHFER_BACKBONE, budget_for
from .fileio import unique_path, write_text
from .notebook import project_root

NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"
RESERVED = ("dataset", "output_dir")          # set them with --dataset / --output, not -p
NOT_COMPARED = ("device",)                    # parameters that may change without refusing the output

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


def parse_value(text: str) -> Any:
    """A ``-p`` value: JSON (true, null, 3, [0, 1], {"a": 1}), then a Python literal, else the string."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


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
# machine, index, overwrite rule

def machine_info(device: str = "auto") -> dict[str, Any]:
    try:
        from .device import environment, select_device
        return environment(select_device(device))
    except Exception as exc:  # the index is still useful without torch details
        return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                "python": platform.python_version(), "device": f"{device} ({type(exc).__name__}: {exc})"}


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


def write_index(output: Path, record: Mapping[str, Any], machine: Mapping[str, Any]) -> Path:
    """``<output>/README.md``: parameters, machine, time per notebook, every table inline and every figure."""
    output = Path(output)
    timings = _read_timings(output / "timings.csv")
    lines = [f"# Ada-DF reproduction results: {record.get('dataset')}", "",
             f"Written by `adadf reproduce` on {_dt.datetime.now().isoformat(timespec='seconds')}.", "",
             f"Command: `{record.get('command', '')}`", "", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    lines += ["", "## Parameters", "", "```json", json.dumps(record.get("parameters", {}), indent=2,
                                                             sort_keys=True, default=str), "```", "",
              "## Notebooks", "", "| notebook | status | seconds | executed copy |", "|---|---|---|---|"]
    for r in timings:
        nb = Path("notebooks") / r["notebook"]
        link = f"[{nb}]({nb})" if (output / nb).is_file() else ""
        lines.append(f"| {r['notebook']} | {r.get('status', '')} | {float(r['seconds']):.1f} | {link} |")
    total = sum(float(r["seconds"]) for r in timings)
    lines += ["", f"Total: {total:.1f} s.", "", "## Tables", ""]
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


def _comparable(record: Mapping[str, Any]) -> dict:
    """The parameters that decide the results. Where the output folder itself lies does not (a clone at
    another path, a moved folder): ``output_dir`` is left out and ``runs_dir`` is taken relative to it."""
    params = {k: v for k, v in record.get("parameters", {}).items() if k not in NOT_COMPARED}
    out = params.pop("output_dir", None)
    runs = params.get("runs_dir")
    if out and runs and Path(runs).is_relative_to(Path(out)):
        params["runs_dir"] = Path(runs).relative_to(Path(out)).as_posix()
    return json.loads(json.dumps({"dataset": record.get("dataset"), "parameters": params}, default=str))


def check_output(output: Path, record: Mapping[str, Any], force: bool) -> Optional[Path]:
    """Apply the overwrite rule (module docstring). Returns the folder old results were moved to, if any."""
    previous = output / "pipeline.json"
    if not previous.is_file():
        return None
    old = json.loads(previous.read_text())
    a, b = _comparable(old), _comparable(record)
    # a pipeline run with --only records only the parameters of its notebooks: compare shared names
    shared = set(a["parameters"]) & set(b["parameters"])
    diffs = [f"{k}: {a['parameters'][k]!r} -> {b['parameters'][k]!r}" for k in sorted(shared)
             if a["parameters"][k] != b["parameters"][k]]
    if a["dataset"] != b["dataset"]:
        diffs.insert(0, f"dataset: {a['dataset']!r} -> {b['dataset']!r}")
    if not diffs:
        return None
    if not force:
        raise PipelineError(f"{output} holds results of a run with other parameters ({'; '.join(diffs)}). "
                            "Choose another --output, or pass --force to move the old index, tables, "
                            "figures and notebooks to a previous-<time>/ folder (runs are kept).")
    dest = unique_path(output / f"previous-{time.strftime('%Y%m%d-%H%M%S')}")
    dest.mkdir()
    for name in ("README.md", "timings.csv", "pipeline.json", "tables", "figures", "notebooks"):
        if (output / name).exists():
            shutil.move(str(output / name), str(dest / name))
    return dest


# ---------------------------------------------------------------------------------------------
# running

def _print_failure(err: NotebookFailedError, stream=None) -> None:
    bar = "-" * 72
    stream = stream or sys.stderr
    print(f"\n{bar}\nnotebook {err.notebook} FAILED in cell {err.cell_index} of the executed copy\n{bar}\ncell source:\n"
          f"{err.source}\n{bar}\n{err.ename}: {err.evalue}\n{bar}\n"
          f"the executed notebook (with the traceback) is at {err.output}", file=stream)


def reproduce(dataset: str = "synthfer", data_root: str | None = None, output: str | Path | None = None,
              quick: bool = False, only: Sequence[str] | str | None = None, device: str = "auto",
              profile: str = "official", params: Mapping[str, Any] | None = None, force: bool = False,
              notebooks_dir: str | Path | None = None, kernel_name: str = "python3",
              progress: bool = True, command: str = "") -> Result:
    """Execute the notebooks in order. Raises ``PipelineError`` before running anything when the
    parameters are wrong, and ``NotebookFailedError`` (after printing the cell and the error) when a
    notebook fails; outputs of notebooks that finished stay, and the index is written either way."""
    import papermill
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError
    from tqdm.auto import tqdm

    params = dict(params or {})
    if dataset != "synthfer" and not data_root:
        raise PipelineError(f"--dataset {dataset} needs --data-root PATH (only synthfer is generated)")
    books = find_notebooks(notebooks_dir, only)
    declared = {b.name: notebook_parameters(b) for b in books}
    validate_overrides(params, declared)
    if output is None:
        output = Path("results") / (f"{dataset}-quick" if quick else dataset)
    output = Path(output).expanduser()
    output = (output if output.is_absolute() else Path.cwd() / output).resolve()
    common = dict(dataset=dataset, data_root=str(Path(data_root).expanduser().resolve()) if data_root else None,
                  output_dir=str(output), runs_dir=str(output / "runs"), device=device, profile=profile,
                  quick=bool(quick))
    base = {**common, **{k: v for k, v in budget_for(dataset, quick).items() if v is not None}, **params}
    per_book = {name: {k: v for k, v in base.items() if k in names} for name, names in declared.items()}
    used = {k: v for name in per_book for k, v in per_book[name].items()}
    record = {"dataset": dataset, "parameters": used, "command": command or f"reproduce(dataset={dataset!r})",
              "notebooks": [b.name for b in books]}
    output.mkdir(parents=True, exist_ok=True)
    moved = check_output(output, record, force)
    if moved:
        print(f"--force: moved the previous results to {moved}")
    elif (output / "pipeline.json").is_file():   # same configuration: keep what earlier --only runs recorded
        old = json.loads((output / "pipeline.json").read_text())
        record["parameters"] = {**old.get("parameters", {}), **record["parameters"]}
        record["notebooks"] = sorted(set(old.get("notebooks", [])) | set(record["notebooks"]))
    for sub in ("notebooks", "figures", "tables", "runs"):
        (output / sub).mkdir(exist_ok=True)
    write_text(output / "pipeline.json", json.dumps(record, indent=2, sort_keys=True, default=str))
    machine = machine_info(device)
    result = Result(output=output)
    _pretrain_if_asked(per_book, result, device, progress)
    failure: Optional[NotebookFailedError] = None
    bar = tqdm(books, desc="notebooks", unit="nb", disable=not progress)
    for book in bar:
        bar.set_postfix_str(book.name)
        out_nb = output / "notebooks" / book.name
        start = time.perf_counter()
        status = "ok"
        try:
            papermill.execute_notebook(str(book), str(out_nb), parameters=per_book[book.name],
                                       kernel_name=kernel_name, cwd=str(book.parent), progress_bar=progress)
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
    bar.close()
    write_timings(output, result.timings)
    write_index(output, record, machine)
    result.figures = sorted((output / "figures").glob("*.png"))
    result.tables = sorted((output / "tables").glob("*.csv"))
    if failure:
        _print_failure(failure)
        raise failure
    _print_summary(result)
    return result


def _pretrain_if_asked(per_book: dict, result: Result, device: str, progress: bool) -> None:
    """Replace the ``synthfer-backbone`` token by the pretrained file (trained once, then reused)."""
    if not any(book.get("pretrained") == SYNTHFER_BACKBONE for book in per_book.values()):
        return
    from .pretrain import synthfer_backbone

    start = time.perf_counter()
    print("pretraining the SynthFER ResNet-18 (the MS-Celeb-1M stand-in; reused once it exists)",
          file=sys.stderr)
    weights = str(synthfer_backbone(device=device, progress=progress))
    for book in per_book.values():
        if book.get("pretrained") == SYNTHFER_BACKBONE:
            book["pretrained"] = weights
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
    p.add_argument("--profile", default="official", choices=["official", "paper"],
                   help="official (the authors' code, default) | paper (the text)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a notebook parameter (JSON or Python literal value); repeatable")
    p.add_argument("--force", action="store_true", help="replace results of other parameters (old ones kept)")
    p.add_argument("--notebooks", default=None, help="notebooks folder (default <repo>/notebooks)")
    p.add_argument("--list", action="store_true", help="list the notebooks and their parameters, run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def cli_main(argv: Optional[list[str]] = None) -> int:
    args = build_arg_parser().parse_args(argv)
    try:
        if args.list:
            for book in find_notebooks(args.notebooks, args.only):
                params = notebook_parameters(book)
                print(f"{book.name}: " + ", ".join(f"{k}={v}" for k, v in params.items()))
            return 0
        params = {name: parse_value(value) for name, value in args.parameter}
        reproduce(dataset=args.dataset, data_root=args.data_root, output=args.output, quick=args.quick,
                  only=args.only, device=args.device, profile=args.profile, params=params, force=args.force,
                  notebooks_dir=args.notebooks, progress=not args.no_progress,
                  command="adadf reproduce " + " ".join(argv if argv is not None else sys.argv[2:]))
    except PipelineError as exc:
        print(f"adadf reproduce: {exc}", file=sys.stderr)
        return 2
    except NotebookFailedError:
        return 1
    return 0
