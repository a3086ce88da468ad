"""Weights and run-state files, written atomically and read without running code stored in them.

``torch.load`` unpickles: a file that someone hands you (``--pretrained``, a run folder you downloaded) can
make it run any code. Every load here uses ``weights_only=True``, which accepts tensors and plain values
(numbers, strings, lists, tuples, dicts) and refuses anything else. What adadf writes is made of exactly
those: numpy arrays inside a run's state (the per-epoch records, numpy's RNG state) are stored as tagged
byte tensors and turned back into the same arrays, bit for bit, when read.

A file that is refused says why and what to do. For a *trusted* legacy file (an older adadf checkpoint, a
weights file saved with numpy objects inside) ``trust_pickle=True`` (CLI: ``--trust-pickle``) reads it with
full unpickling: never automatically.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adadf_core.utils.fileio import atomic_write

_TAG = "__ndarray__"
TRUST_HINT = ("if you trust the file (for example a checkpoint written by an older adadf), pass "
              "--trust-pickle (Python: trust_pickle=True), which reads it with full unpickling")


class CheckpointError(ValueError):
    """A weights or state file that is empty, truncated, not a checkpoint, or not safe to read."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds objects that only full unpickling (which can run code) would rebuild."""


def pack(obj: Any) -> Any:
    """``obj`` with every numpy array replaced by a tagged uint8 tensor of its bytes (exact for any dtype)."""
    if isinstance(obj, np.ndarray):
        raw = torch.frombuffer(bytearray(np.ascontiguousarray(obj).tobytes()), dtype=torch.uint8) \
            if obj.size else torch.zeros(0, dtype=torch.uint8)
        return {_TAG: raw, "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: pack(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(pack(v) for v in obj)
    return obj


def unpack(obj: Any) -> Any:
    """The inverse of :func:`pack`."""
    if isinstance(obj, dict):
        if _TAG in obj:
            return np.frombuffer(obj[_TAG].numpy().tobytes(), dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
        return {k: unpack(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(unpack(v) for v in obj)
    return obj


def save(path: str | Path, obj: Any) -> None:
    """``torch.save`` of ``pack(obj)``, atomically (a reader or a crash never sees half a file)."""
    packed = pack(obj)
    atomic_write(Path(path), lambda tmp: torch.save(packed, tmp))


def load(path: str | Path, what: str = "checkpoint", trust_pickle: bool = False) -> Any:
    """Read a file written by :func:`save` (or any plain weights file) without running code from it.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` (one line naming the file,
    what is wrong and what to do) for an empty, truncated, garbage or unsafe one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes): it was never completely written")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as error:
        text = str(error)
        reason = next((ln.strip() for ln in text.splitlines() if "Unsupported" in ln), text.splitlines()[0])
        if "GLOBAL" in reason:            # a class or function the file wants rebuilt: only code can do that
            raise UnsafeCheckpointError(f"refused to load {what} {path}: {reason.rstrip('.')}; reading it "
                                        f"would run code stored in the file. {TRUST_HINT}") from None
        raise CheckpointError(f"{what} {path} is truncated or not a torch checkpoint ({reason})") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, AttributeError, ImportError) as error:
        first = (str(error).splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{what} {path} is truncated or not a torch checkpoint "
                              f"({type(error).__name__}: {first})") from None
    return unpack(obj)


def non_finite(state: dict) -> list[str]:
    """Names of the floating-point tensors in a state dict that hold NaN or inf."""
    return [k for k, v in state.items()
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
