"""``did_you_mean``: the close matches of a mistyped name, for one-line errors (``adadf trian``, ``--dataset RAF``)."""
from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(value: object, choices: Iterable[object]) -> str:
    """``"; did you mean 'raf'?"`` when ``value`` is close to one or more ``choices`` (case ignored), else ``""``."""
    names = [str(c) for c in choices]
    lower = {n.lower(): n for n in names}
    text = str(value).lower()
    close = [lower[m] for m in difflib.get_close_matches(text, list(lower), n=3, cutoff=0.6)]
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
