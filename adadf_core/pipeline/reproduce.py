"""`adadf reproduce`: run every notebook in order with papermill and write ``results/<dataset>/``.

    adadf reproduce --dataset synthfer [--data-root PATH] [--output results/<dataset>] [--quick]
                    [--only 02,03] [--device auto] [--profile official] [-p NAME VALUE ...] [--force]
    adadf reproduce --dataset synthfer --compare     # compare results/<dataset> with the reference again
    adadf reproduce --dataset synthfer --promote     # make results/<dataset> the committed reference

What it writes (``<output>``, default ``<repo>/results/<dataset>``, or ``results/<dataset>-quick`` with
--quick; both git-ignored): ``notebooks/`` the executed notebooks, ``figures/*.png`` and
``tables/*.{csv,md}`` (written by the notebooks), ``runs/`` the training runs, ``README.md`` an index of
every table and figure with the provenance and the time per notebook, ``timings.csv``, ``pipeline.json``
(parameters and provenance) and ``reference_comparison.md``. Parameters: `pipeline.parameters`; the record and
the overwrite rule: `pipeline.provenance`; the reference: `pipeline.reference`.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pandas as pd
import papermill
from nbclient.exceptions import DeadKernelError
from papermill.exceptions import PapermillExecutionError

from adadf_core.pipeline.budgets import BUDGETS, SYNTHFER_BACKBONE
from adadf_core.pipeline.notebook import (check_not_reference, display_path, parameter_value, project_root,
                                         quick_folder, reference_root)
from adadf_core.pipeline.parameters import (check_parameters, default_output, effective_parameters, find_notebooks,
                                            notebook_inputs, notebook_parameters, PipelineError, validate_overrides)
from adadf_core.pipeline.provenance import check_output, provenance, read_record, write_index, write_timings
from adadf_core.pipeline.reference import compare_with_reference, print_comparison, promote_reference
from adadf_core.pipeline.summary import update_readme
from adadf_core.studies.experiments import DEVICES_VARIABLE, parse_devices
from adadf_core.studies import pretrain
from adadf_core.utils.fileio import sha256_file, write_text
from adadf_core.utils.progress import MODE_VARIABLE, bar


class NotebookFailedError(RuntimeError):
    """A notebook raised; carries the notebook name, cell index, cell source, error name and value."""

    def __init__(self, notebook: str, cell_index, source: str, ename: str, evalue: str, output: Path):
        self.notebook, self.cell_index, self.source = notebook, cell_index, source
        self.ename, self.evalue, self.output = ename, evalue, output
        super().__init__(f"{notebook} failed in cell {cell_index}: {ename}: {evalue}")


class ReproduceInterrupted(RuntimeError):
    """Ctrl-C while a notebook ran: the index and timings say "interrupted"; finished runs are kept."""

    def __init__(self, notebook: str, output: Path):
        self.notebook, self.output = notebook, output
        super().__init__(f"interrupted during {notebook}; the index ({display_path(output / 'README.md')}) says so. "
                         "Run the same command again to continue: finished runs are reused")


@dataclass
class Result:
    output: Path
    timings: list[dict] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)
    notebooks: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# running

def _print_failure(err: NotebookFailedError, stream=None) -> None:
    bar = "-" * 72
    stream = stream or sys.stderr
    print(f"\n{bar}\nnotebook {err.notebook} FAILED in cell {err.cell_index} of the executed copy\n{bar}\ncell source:\n"
          f"{err.source}\n{bar}\n{err.ename}: {err.evalue}\n{bar}\n"
          f"the executed notebook (with the traceback) is at {err.output}", file=stream)


def plan_line(dataset: str, books: Sequence[Path], output: Path, quick: bool) -> str:
    """What a run of ``reproduce`` is about to do, in one line: the notebooks, where results go, what is reused
    and, from the committed reference's timings, how long the reference took (when there is one)."""
    runs = list((output / "runs").glob("*/summary.json"))
    reuse = f"{len(runs)} finished runs in it are reused" if runs else "every run is trained"
    line = (f"adadf reproduce: {len(books)} notebook(s) ({books[0].stem[:2]}-{books[-1].stem[:2]}) for {dataset} "
            f"into {display_path(output)}; {reuse}")
    timings = reference_root() / dataset / "timings.csv"
    if not quick and len(books) > 1 and timings.is_file():
        minutes = pd.read_csv(timings)["seconds"].sum() / 60
        line += f"; the committed reference took {minutes:.0f} min from scratch (docs/MEASUREMENTS.md: its machine)"
    return line


MAX_CPU_WORKERS = 8          # processes of one thread each for SynthFER's runs (each holds ~1 GB)


def cpu_workers(device: str = "auto") -> list[str]:
    """SynthFER's runs on a machine without CUDA: one single-thread process per core (up to ``MAX_CPU_WORKERS``),
    which on 2 cores trains 1.3x more images a second than one two-thread process (benchmarks/bench_study.py).
    The preset pins each run to one thread, so the numbers are the same whatever the number of workers; one
    core: ``[]`` (runs in turn). With CUDA (or ``--device cuda``): ``[]``."""
    import torch          # here: `adadf reproduce --help` and its argument errors start without torch

    wanted = (device or "auto").strip().lower()
    if wanted.startswith("cuda") or (wanted == "auto" and torch.cuda.is_available()):
        return []
    n = min(MAX_CPU_WORKERS, os.cpu_count() or 1)
    return ["cpu"] * n if n > 1 else []


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
    elif dataset == "synthfer" and not quick:
        devices = cpu_workers(device)
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
    check_parameters(declared, per_book)
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
    print(plan_line(dataset, books, output, quick), flush=True)
    result = Result(output=output)
    _pretrain_if_asked(per_book, result, device, progress)
    _record_backbone(record, per_book, output)
    failure = _run_notebooks(books, per_book, output, result, kernel_name, progress, devices)
    write_timings(output, result.timings)
    comparison = compare_with_reference(output, dataset=dataset) if compare and not failure else {"reference": None}
    write_index(output, record)
    result.figures = sorted((output / "figures").glob("*.png"))
    result.tables = sorted((output / "tables").glob("*.csv"))
    if isinstance(failure, ReproduceInterrupted):
        raise failure
    if failure:
        _print_failure(failure)
        raise failure
    _print_summary(result)
    if compare:
        print_comparison(comparison)
    return result


def _run_notebooks(books: Sequence[Path], per_book: Mapping[str, dict], output: Path, result: Result,
                   kernel_name: str, progress: bool, devices: Sequence[str] = ()
                   ) -> Optional[NotebookFailedError | ReproduceInterrupted]:
    """Execute ``books`` in order into ``<output>/notebooks`` (``ADADF_PROGRESS=lines`` for their kernels:
    executed notebooks read as logs; ``ADADF_DEVICES`` when several ``devices`` share the studies' runs);
    timings go to ``result``. Stops at, and returns, the first failure."""
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
            except KeyboardInterrupt:
                status, failure = "interrupted", ReproduceInterrupted(book.name, output)
            except PapermillExecutionError as exc:
                if exc.ename == "KeyboardInterrupt":    # Ctrl-C reached the kernel first
                    status, failure = "interrupted", ReproduceInterrupted(book.name, output)
                else:
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

    if pretrain.default_path().is_file():
        return
    start = time.perf_counter()
    print("pretraining the SynthFER ResNet-18 (the MS-Celeb-1M stand-in; reused once it exists)",
          file=sys.stderr)
    pretrain.synthfer_backbone(device=device, progress=progress)
    result.timings.append(dict(notebook="pretrain-synthfer", seconds=f"{time.perf_counter() - start:.1f}",
                               status="ok", finished_at=_dt.datetime.now().isoformat(timespec="seconds")))


def _record_backbone(record: dict, per_book: dict, output: Path) -> None:
    """Every SynthFER run starts from the backbone file: its SHA-256 goes into ``pipeline.json``, so that
    the comparison with the reference can name a different backbone first (``reference.compare_with_reference``)."""
    uses_backbone = any(book.get("pretrained") == SYNTHFER_BACKBONE for book in per_book.values())
    if uses_backbone and pretrain.default_path().is_file():
        record["synthfer_backbone_sha256"] = sha256_file(pretrain.default_path())[1]
        write_text(output / "pipeline.json", json.dumps(record, indent=2, sort_keys=True, default=str))


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
                        "device, the same runs as in sequence (the rest uses the first). Default on SynthFER without "
                        "CUDA: cpu once per core (up to 8), each run one thread")
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
                dest = promote_reference(output, args.dataset)
                print(f"reference written: {dest}")
                readme = project_root() / "README.md"
                if args.dataset == "synthfer" and update_readme(readme, dest):
                    print(f"results block rewritten from the new reference: {readme}")
            print_comparison(compare_with_reference(output, dataset=args.dataset))
            return 0
        params = {name: parameter_value(value) for name, value in args.parameter}
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
    except (ReproduceInterrupted, KeyboardInterrupt) as stop:        # Ctrl-C: one line, not a traceback
        print(f"adadf reproduce: {str(stop) or 'interrupted before the notebooks started'}", file=sys.stderr)
        return 130
    return 0
