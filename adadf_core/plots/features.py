"""t-SNE of the test features, one panel per method, with the separability score in the title (notebook 04)."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from adadf_core.plots.common import class_labels
from adadf_core.studies.analysis import separability, tsne_embedding


def tsne_comparison(feature_sets: Mapping[str, dict], class_names: Sequence[str] | None = None,
                    seed: int = 0, max_points: int = 2000):
    """Fig. 3: one t-SNE panel per entry of ``feature_sets`` (e.g. {"baseline": f1, "Ada-DF": f2}; each a
    features.npz dict or a Run), coloured by true class, with the separability scores under each panel.
    The scores are also stored on the figure as ``fig.separability`` (label -> dict)."""
    n = len(feature_sets)
    if n == 0:
        raise ValueError("tsne_comparison needs at least one feature set")
    fig, axes = plt.subplots(1, n, figsize=(5.6 * n, 5.6), squeeze=False)
    scores = {}
    cmap = plt.get_cmap("tab10")
    names_used = None
    for ax, (label, fs) in zip(axes[0], feature_sets.items()):
        data = fs.features if hasattr(fs, "features") and not isinstance(fs, dict) else fs
        if data is None:
            raise ValueError(f"{label}: the run has no features.npz")
        x, y = np.asarray(data["features"]), np.asarray(data["labels"])
        if len(x) > max_points:
            keep = np.sort(np.random.default_rng(seed).choice(len(x), max_points, replace=False))
            x, y = x[keep], y[keep]
        names = class_labels(class_names, int(max(y.max() + 1, len(class_names or []))))
        names_used = names
        emb = tsne_embedding(x, seed=seed)
        for c in np.unique(y):
            sel = y == c
            ax.scatter(emb[sel, 0], emb[sel, 1], s=7, color=cmap(int(c) % 10), label=names[int(c)], alpha=0.8)
        scores[label] = separability(x, y, seed=seed)
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"silhouette {scores[label]['silhouette']:.3f}   "
                      f"{5}-NN accuracy {scores[label]['knn_acc']:.2%}")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), fontsize=8, markerscale=2)
    fig.suptitle("t-SNE of test-set features (target branch), coloured by true class")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.separability = scores
    fig.class_names = names_used
    return fig
