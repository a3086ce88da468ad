"""Tables as the notebooks save them: ``tables/<name>.csv`` beside ``<name>.md`` (GitHub Markdown), both
written atomically. Floats are rounded to ``DECIMALS`` places in both: an accuracy on SynthFER's test set
moves in steps of 1/800 (0.00125), so a fifth decimal would only show noise of the arithmetic.

``save_card`` writes a protocol card (``protocol.protocol_card``): every number in the CSV, and in the
Markdown the protocol paragraph above the text table (mean ± std [95 % CI], how each epoch was selected)."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from adadf_core.studies import protocol
from adadf_core.utils.fileio import atomic_write, write_text


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


DECIMALS = 4


def _paths(out_dir: str | Path, name: str) -> tuple[Path, Path]:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"table name {name!r} must be letters, digits, '.', '_' or '-'")
    folder = Path(out_dir) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.csv", folder / f"{name}.md"


def _keeps_index(df: pd.DataFrame) -> bool:
    return bool(df.index.name) or not isinstance(df.index, pd.RangeIndex)


def _write_csv(df: pd.DataFrame, path: Path, decimals: int) -> None:
    atomic_write(path, lambda p: df.round(decimals).to_csv(p, index=_keeps_index(df)))


def save_table(df: pd.DataFrame, out_dir: str | Path, name: str, decimals: int = DECIMALS) -> dict[str, Path]:
    """Write ``out_dir/tables/<name>.csv`` and ``<name>.md`` (floats to ``decimals`` places); return both paths."""
    csv, md = _paths(out_dir, name)
    _write_csv(df, csv, decimals)
    write_text(md, to_markdown(df, index=_keeps_index(df)))
    return {"csv": csv, "md": md}


def save_card(card: pd.DataFrame, out_dir: str | Path, name: str, epochs: int | None = None,
              extra: Sequence[str] = (), keys: Sequence[str] | None = None,
              decimals: int = DECIMALS) -> dict[str, Path]:
    """Write a protocol card: the numbers to ``<name>.csv``; to ``<name>.md`` the protocol paragraph and
    the card as text (``protocol.card_text``) with the ``extra`` columns of ``card`` after it."""
    csv, md = _paths(out_dir, name)
    _write_csv(card, csv, decimals)
    write_text(md, card_markdown(card, epochs, extra, keys))
    return {"csv": csv, "md": md}


def card_markdown(card: pd.DataFrame, epochs: int | None = None, extra: Sequence[str] = (),
                  keys: Sequence[str] | None = None) -> str:
    """A protocol card as Markdown: the protocol paragraph, then the text table (``protocol.card_text``,
    its ``keys`` columns first) with the ``extra`` columns of ``card`` after it."""
    text = protocol.card_text(card, keys=keys)
    for col in extra:
        text[col] = card[col]
    return protocol.card_legend(card, epochs) + "\n\n" + to_markdown(text, index=_keeps_index(card))
