"""What every figure shares: saving (atomic PNG), showing in a notebook, reading a run's metrics, class names."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from adadf_core.utils.fileio import atomic_write


DPI = 120


def save_figure(fig, out_dir: str | Path, name: str, dpi: int = DPI) -> Path:
    """Write ``fig`` to ``out_dir/figures/<name>.png`` and return the path."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"figure name {name!r} must be letters, digits, '.', '_' or '-'")
    folder = Path(out_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png"))
    return path


def show(fig, out_dir: str | Path, name: str):
    """Notebook helper: save ``fig`` (``save_figure``), display it once and close it. Returns the path."""
    path = save_figure(fig, out_dir, name)
    try:
        display(fig)
    except ImportError:
        pass
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# helpers

def metrics_frame(x) -> pd.DataFrame:
    m = x if isinstance(x, pd.DataFrame) else getattr(x, "metrics", None)
    if m is None or len(m) == 0:
        raise ValueError("no metrics: the run has no finished epoch yet (metrics.csv is empty)")
    return m


def has_column(m: pd.DataFrame, col: str) -> bool:
    return col in m.columns and pd.to_numeric(m[col], errors="coerce").notna().any()


def class_labels(names: Optional[Sequence[str]], c: int) -> list[str]:
    return list(names) if names is not None and len(names) == c else [f"class {i}" for i in range(c)]
