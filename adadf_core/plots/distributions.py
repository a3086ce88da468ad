"""Ada-DF's distributions: the class distributions D and their evolution, the label distribution d, D[y] and the
fused f of tracked samples, and their divergence to the votes over the epochs (notebooks 05 and 06)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from adadf_core.plots.common import class_labels, has_column, metrics_frame
from adadf_core.studies.analysis import fallback_rows, tracked_arrays


def class_distribution_heatmap(D, class_names: Sequence[str] | None = None, threshold: float | None = None,
                               title: str = "class distributions D (rows: class, columns: description degree)"):
    """Fig. 4: the [C, C] matrix D as an annotated heatmap; rows that fell back to the threshold
    distribution are marked "(fallback)" and outlined."""
    D = np.asarray(D, dtype=np.float64)
    names = class_labels(class_names, D.shape[0])
    fb = fallback_rows(D, threshold)
    ylabels = [f"{n} (fallback)" if f else n for n, f in zip(names, fb)]
    fig, ax = plt.subplots(figsize=(7, 5.8))
    sns.heatmap(D, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1, ax=ax,
                xticklabels=names, yticklabels=ylabels)
    for i in np.flatnonzero(fb):
        ax.add_patch(Rectangle((0, i), D.shape[1], 1, fill=False, edgecolor="red", lw=2))
    ax.set(title=title, xlabel="description degree of class", ylabel="class")
    fig.tight_layout()
    fig.fallback = fb
    return fig


def class_distribution_evolution(dists, class_names: Sequence[str] | None = None,
                                 threshold: float | None = None, panels: int = 5):
    """How D evolves: small multiples of D at a few epochs (top) and, below, each class's diagonal
    D[e, c, c] over epochs with the threshold t; an "x" marks an epoch where the class fell back."""
    dists = np.asarray(dists, dtype=np.float64)
    if dists.ndim != 3:
        raise ValueError(f"class distributions must be [E+1, C, C], got shape {dists.shape}")
    n_e, c = dists.shape[0], dists.shape[1]
    names = class_labels(class_names, c)
    picks = sorted(set(np.linspace(0, n_e - 1, min(panels, n_e)).round().astype(int).tolist()))
    fig = plt.figure(figsize=(2.6 * max(len(picks), 3), 7.2))
    gs = fig.add_gridspec(2, len(picks), height_ratios=[1, 1.25])
    for j, e in enumerate(picks):
        ax = fig.add_subplot(gs[0, j])
        ax.imshow(dists[e], vmin=0, vmax=1, cmap="viridis")
        ax.set_title("initial D" if e == 0 else f"after epoch {e}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks(range(c) if j == 0 else [])
        if j == 0:
            ax.set_yticklabels(names, fontsize=7)
    ax = fig.add_subplot(gs[1, :])
    cmap = plt.get_cmap("tab10")
    epochs = np.arange(n_e)
    for i in range(c):
        diag = dists[:, i, i]
        ax.plot(epochs, diag, marker=".", color=cmap(i % 10), label=names[i])
        fb = np.array([fallback_rows(dists[e], threshold)[i] for e in range(1, n_e)], dtype=bool)
        ax.scatter(epochs[1:][fb], diag[1:][fb], marker="x", s=50, color=cmap(i % 10))
    if threshold is not None:
        ax.axhline(threshold, ls="--", color="grey", label=f"threshold t = {threshold:g}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch (0 = initial D)", ylabel="D[c, c]", ylim=(0, 1.02),
           title="diagonal of D over epochs (x = threshold fallback)")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    return fig


def fusion_sample(tracked, k: int, epoch: int = -1, class_names: Sequence[str] | None = None):
    """Fig. 5 for tracked sample ``k``: bars of its label distribution d, class distribution D[y], the
    fused target f and (SynthFER) the ground-truth vote distribution; title gives the attention weight."""
    t = tracked_arrays(tracked)
    d, cd, f = (np.asarray(t[key])[epoch, k] for key in ("label_dist", "class_dist", "fused"))
    c = d.shape[-1]
    names = class_labels(class_names, c)
    series = [("label distribution d", d), ("class distribution D[y]", cd), ("fused f", f)]
    gt = t.get("gt")
    if gt is not None and np.isfinite(gt[k]).all():
        series.append(("ground-truth votes", np.asarray(gt[k])))
    n_ep = np.asarray(t["fused"]).shape[0]
    e = epoch if epoch >= 0 else n_ep + epoch
    w = float(np.asarray(t["attention_weight"])[epoch, k])
    y = int(np.asarray(t["labels"])[k])
    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    x = np.arange(c)
    width = 0.8 / len(series)
    for j, (label, v) in enumerate(series):
        ax.bar(x + (j - (len(series) - 1) / 2) * width, v, width, label=label)
    ax.set_xticks(x, names, rotation=30, ha="right")
    idx = int(np.asarray(t["indices"])[k])
    ax.set(ylim=(0, 1), ylabel="probability",
           title=f"sample {idx} (label {names[y]}), epoch {e + 1}: attention weight w = {w:.3f}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fusion_over_epochs(tracked, k: int, class_names: Sequence[str] | None = None):
    """Fig. 6 for tracked sample ``k``: heatmaps (epoch × class) of the label distribution d and the fused
    target f, and the attention weight over epochs."""
    t = tracked_arrays(tracked)
    d = np.asarray(t["label_dist"])[:, k]
    f = np.asarray(t["fused"])[:, k]
    w = np.asarray(t["attention_weight"])[:, k]
    n_ep, c = d.shape
    names = class_labels(class_names, c)
    y = int(np.asarray(t["labels"])[k])

    fig, axes = plt.subplots(1, 3, figsize=(14, 0.25 * n_ep + 3.2), layout="constrained",
                             gridspec_kw=dict(width_ratios=[1, 1.2, 0.6]))
    for ax, data, title in ((axes[0], d, "label distribution d"), (axes[1], f, "fused f")):
        im = ax.imshow(data, aspect="auto", vmin=0, vmax=1, cmap="magma", interpolation="nearest",
                       extent=(-0.5, c - 0.5, n_ep + 0.5, 0.5))
        ax.set_xticks(range(c), names, rotation=45, ha="right", fontsize=8)
        ax.set(ylabel="epoch", title=title)
        ax.axvline(y, color="cyan", lw=0.8, ls=":")
    fig.colorbar(im, ax=axes[1], fraction=0.08, label="probability")
    axes[2].plot(w, np.arange(1, n_ep + 1), marker="o")
    axes[2].set(xlim=(0, 1.05), ylim=(n_ep + 0.5, 0.5), xlabel="attention weight w", ylabel="epoch",
                title="weight")
    for ax in axes:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"sample {int(np.asarray(t['indices'])[k])} (label {names[y]}; dotted line) over epochs")
    return fig


def divergence_curves(run):
    """SynthFER only: KL and JS divergence between the ground-truth vote distribution and the label
    (d), class (D[y]) and fused (f) distributions of the training samples, per epoch (metrics.csv)."""
    m = metrics_frame(run)
    cols = [f"{kind}_gt_{what}" for kind in ("kl", "js") for what in ("label", "class", "fused")]
    if not any(has_column(m, c) for c in cols):
        raise ValueError("metrics.csv has no divergence columns (kl_gt_*, js_gt_*): they exist on SynthFER only")
    names = {"label": "d (label distribution)", "class": "D[y] (class distribution)", "fused": "f (fused target)"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, kind in zip(axes, ("kl", "js")):
        for what in ("label", "class", "fused"):
            col = f"{kind}_gt_{what}"
            if has_column(m, col):
                ax.plot(m["epoch"], m[col], marker="o", label=names[what])
        ax.set(title=f"{kind.upper()}(votes ‖ ·): lower is closer to the annotators", xlabel="epoch",
               ylabel=f"mean {kind.upper()} over training faces")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    cfg = getattr(run, "config", None)
    who = f"{cfg.method}, seed {cfg.seed}: " if cfg is not None else ""
    fig.suptitle(f"{who}divergence of each target to SynthFER's annotator votes", fontsize=10)
    fig.tight_layout()
    return fig
