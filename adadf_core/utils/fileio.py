"""Small file helpers shared by the trainer, the studies and the pipeline (no torch import here, so
torch-free modules such as align can use them too)."""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Callable

# the repository root: the folder that holds adadf_core/ (data/, results/ and notebooks/ lie beside it)
PROJECT_ROOT = Path(__file__).resolve().parents[2]


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


def sha256_file(path: str | Path) -> tuple[int, str]:
    """(size in bytes, SHA-256 hex digest) of a file's bytes, read in 1 MiB chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


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


class DamagedFileError(ValueError):
    """A file adadf wrote that no longer parses (truncated, emptied, overwritten)."""


def read_json(path: str | Path, what: str = "file") -> dict:
    """Parse a JSON file; a damaged one raises ``DamagedFileError`` naming the file, where, and what to do."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DamagedFileError(f"{what} {path} is not UTF-8 text (byte {error.start}): the file is damaged; "
                               "restore it or remove the run folder") from None
    try:
        data = json.loads(text)
    except ValueError as error:
        detail = "it is empty" if not text.strip() else f"{error.msg} at line {error.lineno} column {error.colno}"
        raise DamagedFileError(f"{what} {path} is not valid JSON ({detail}): the file is damaged; "
                               "restore it or remove the run folder") from None
    if not isinstance(data, dict):
        raise DamagedFileError(f"{what} {path} holds {type(data).__name__}, expected a JSON object")
    return data


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # alive, owned by someone else
        return True
    return True


def clean_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove ``atomic_write`` temporaries (``.<name>.<pid>.tmp``) left in ``folder`` (and one level of
    sub-folders) by processes that no longer run, e.g. a checkpoint write killed with ``kill -9``.
    Temporaries of live processes are kept. Returns the removed paths."""
    removed = []
    folder = Path(folder)
    candidates = list(folder.glob(".*.tmp")) + list(folder.glob("*/.*.tmp")) if folder.is_dir() else []
    for path in candidates:
        match = re.fullmatch(r"\..+\.(\d+)\.tmp", path.name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
