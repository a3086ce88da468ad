"""Tables as the notebooks save them: ``tables/<name>.csv`` (full precision) beside ``<name>.md`` (GitHub
Markdown, floats with 4 decimals), both written atomically."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .fileio import atomic_write, write_text


def _md_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else f"{v:.4f}"
    return str(v).replace("|", "\\|")


def to_markdown(df: pd.DataFrame, index: bool = True) -> str:
    """A GitHub Markdown table (no extra dependency); floats with 4 decimals, NaN as blank."""
    frame = df.reset_index() if index and (df.index.name or not isinstance(df.index, pd.RangeIndex)) else df
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_md_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def save_table(df: pd.DataFrame, out_dir: str | Path, name: str) -> dict[str, Path]:
    """Write ``out_dir/tables/<name>.csv`` (full precision) and ``<name>.md``; return both paths."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"table name {name!r} must be letters, digits, '.', '_' or '-'")
    folder = Path(out_dir) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    keep_index = bool(df.index.name) or not isinstance(df.index, pd.RangeIndex)
    csv, md = folder / f"{name}.csv", folder / f"{name}.md"
    atomic_write(csv, lambda p: df.to_csv(p, index=keep_index))
    write_text(md, to_markdown(df, index=keep_index))
    return {"csv": csv, "md": md}
