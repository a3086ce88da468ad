"""What long work shows while it runs: text progress bars, one line per finished epoch, one line per run.

Bars are always tqdm's *text* bars, never notebook widgets: a widget bar stored in an executed notebook
shows only its frozen text fallback (``0%| | 0/31``). Under ``adadf reproduce`` (environment variable
``ADADF_PROGRESS=lines``, which the pipeline sets for its kernels) there are no bars at all, only the lines
(``epoch_line``, ``note``), so an executed notebook reads as a log. In JupyterLab, a terminal or a plain
``papermill`` run the bars are text that redraws in place (at most every few seconds when the output is
not a terminal).
"""
from __future__ import annotations

import os
import sys

from tqdm.std import tqdm

MODE_VARIABLE = "ADADF_PROGRESS"


def lines_only() -> bool:
    """True when bars are off and only the per-epoch and per-run lines are printed."""
    return os.environ.get(MODE_VARIABLE, "").strip().lower() == "lines"


def bar(iterable=None, **kwargs):
    """A text tqdm bar (``kwargs`` as for tqdm); disabled under ``ADADF_PROGRESS=lines``."""
    if lines_only():
        kwargs["disable"] = True
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 5.0)
    return tqdm(iterable, **kwargs)


def note(text: str) -> None:
    """One progress line (printed in every mode, between bars without breaking them)."""
    tqdm.write(text, file=sys.stdout)


def epoch_bar(cfg, steps: int, epoch: int):
    """A bar over the ``steps`` of ``epoch`` (None with ``cfg.progress`` off)."""
    if not cfg.progress:
        return None
    return bar(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, dynamic_ncols=True)


def epoch_line(cfg, row: dict) -> None:
    """One line per finished epoch: loss, training and test accuracy, seconds."""
    if cfg.progress:
        note(f"epoch {row['epoch']}/{cfg.epochs}: loss {row.get('loss', float('nan')):.4f}  "
             f"train_acc {row.get('train_acc', float('nan')):.4f}  test_acc {row['test_acc']:.4f}  "
             f"({row['seconds']:.1f}s)")
