"""The notebooks and their parameters: which notebooks run, what each declares in its cell tagged ``parameters``, and the
values each gets.

Every notebook gets the common parameters (dataset, data_root, output_dir, runs_dir, device, profile, quick) and
the data set's budget from ``budgets.BUDGETS`` (only the names its ``parameters`` cell declares), then the ``-p``
values. A ``-p`` name that no selected notebook declares is an error. Paths inside the repository are passed
relative to it.
"""
from __future__ import annotations

import ast
import difflib
import inspect
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import nbformat

from adadf_core.pipeline.budgets import budget_for
from adadf_core.pipeline.notebook import base_config, display_path, parameter_value, project_root, quick_folder, seed_list


NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"
RESERVED = ("dataset", "output_dir")          # set them with --dataset / --output, not -p
NOT_COMPARED = ("device",)                    # parameters that may change without refusing the output
LOCATION = ("output_dir", "runs_dir")         # compared relative to the output folder, not as paths

class PipelineError(RuntimeError):
    """The pipeline could not start (bad parameters, results of another configuration)."""


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


def check_parameters(declared: Mapping[str, Mapping[str, str]], per_book: Mapping[str, Mapping[str, Any]]) -> None:
    """Every notebook's parameters as its set-up will read them, checked before anything runs or moves: a
    true/false parameter gets true or false, and the training parameters give a valid base config
    (``notebook.base_config``). Raises ``PipelineError`` naming the notebook, the parameter and what was expected."""
    names = [k for k, p in inspect.signature(base_config).parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    for book, passed in per_book.items():
        values = effective_parameters(declared[book], passed)
        for key, text in declared[book].items():
            if isinstance(parameter_value(text), bool) and not isinstance(values[key], bool):
                raise PipelineError(f"{book}: -p {key}={values[key]!r} is not valid; expected true or false")
        if "epochs" in values or "seeds" in values:
            try:
                base_config(**{k: values[k] for k in names if k in values})
                if "study_seeds" in values:
                    seed_list(values["study_seeds"], values.get("dataset", "synthfer"), bool(values.get("quick")),
                              "study_seeds", fallback=[0])
            except ValueError as exc:
                raise PipelineError(f"{book}: {exc} (a -p value or the notebook's own parameter)") from None


def effective_parameters(declared: Mapping[str, str], passed: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter a notebook runs with: its own defaults (the parameters cell's values) overlaid
    with what the pipeline passes."""
    values = {name: parameter_value(text) for name, text in declared.items()}
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
