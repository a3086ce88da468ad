"""Subsets and label noise of a training split.

``max_samples`` keeps a deterministic *first-N stratified* subset (`stratified_first`): each class keeps its
first samples in file order, in proportion to its share of the split (largest remainder), before any noise
is applied. Label noise (symmetric, or a noisy-label file) is applied to the training split only; test
labels never change.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from adadf_core.data.labelfiles import (DatasetError, parse_noise_spec, read_label_file, refuse_shifted_labels,
                                        sample_key)
from adadf_core.data.layouts import SplitIndex


# --------------------------------------------------------------------------------------------
# subsets and label noise

def stratified_first(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices (ascending) of a deterministic first-N stratified subset of size min(n, N)."""
    labels = np.asarray(labels)
    total = len(labels)
    if n >= total:
        return np.arange(total)
    if n < 1:
        raise DatasetError(f"max_samples={n} is not valid; expected a positive integer")
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / total
    take = np.floor(exact).astype(int)
    order = np.argsort(-(exact - take), kind="stable")
    take[order[: n - take.sum()]] += 1
    keep = np.concatenate([np.nonzero(labels == c)[0][:k] for c, k in zip(classes, take)])
    return np.sort(keep)


def symmetric_noise(labels: np.ndarray, rate: float, num_classes: int, seed: int) -> np.ndarray:
    """Flip exactly round(rate*N) labels, chosen uniformly, each to a uniformly random different class."""
    if not 0.0 <= rate < 1.0:
        raise DatasetError(f"noise_rate={rate} is not valid; expected a value in [0, 1)")
    labels = np.asarray(labels, dtype=np.int64)
    noisy = labels.copy()
    n_flip = int(round(rate * len(labels)))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(labels), size=n_flip, replace=False)
    offset = rng.integers(1, num_classes, size=n_flip)
    noisy[chosen] = (labels[chosen] + offset) % num_classes
    return noisy


def apply_label_file(index: SplitIndex, labels: np.ndarray, spec: str | Path,
                      fmt: Optional[str] = None) -> np.ndarray:
    """``labels`` with the noisy label file's labels put in (matched by `sample_key`; every name must be an
    image of the whole training split, before any ``max_samples`` subset)."""
    path, fmt = parse_noise_spec(spec, fmt)
    table = read_label_file(path, len(index.class_names), fmt)
    pos = {sample_key(name): i for i, name in enumerate(index.names)}
    pos.update({sample_key(name): i for i, name in enumerate(index.ids)})
    unknown = [n for n in table if n not in pos]
    if unknown:
        raise DatasetError(f"label file {path} names {len(unknown)} image(s) that are not in this training split, "
                           f"e.g. {unknown[:5]}")
    noisy = labels.copy()
    for key, (label, _) in table.items():
        noisy[pos[key]] = label
    rows = [pos[k] for k in table]
    refuse_shifted_labels(noisy[rows].tolist(), index.labels[rows].tolist(), path, fmt)
    return noisy
