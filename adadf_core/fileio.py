"""Small file helpers shared by the trainer, the studies and the pipeline (no torch import here, so
torch-free modules such as align can use them too)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)``, then move the result onto ``path`` in one step: a reader (or a crash)
    never sees a half-written file. The temporary name is unique per process; it is removed on error."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def _json_default(x):
    if hasattr(x, "tolist"):          # numpy scalars and arrays
        return x.tolist()
    return str(x)


def write_json(path: str | Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def unique_path(path: str | Path) -> Path:
    """``path`` if nothing is there yet, else ``path-2``, ``path-3``, ...: for moving old results aside
    without ever landing on (or inside) an earlier copy."""
    path = Path(path)
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate
