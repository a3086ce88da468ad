"""Figures of one run: learning curves, per-class accuracy, the confusion matrix (notebook 02)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from adadf_core.plots.common import class_labels, has_column, metrics_frame


# ---------------------------------------------------------------------------------------------
# training curves

LOSS_LABELS = {"loss": "total", "loss_ce": "L_CE (auxiliary branch)", "loss_kl": "L_KL (target branch)",
               "loss_rr": "L_RR (rank regularisation)", "w_ce": "w_CE", "w_kl": "w_KL"}


def learning_curves(run, title: str | None = None):
    """2×2 panels from metrics.csv: train/test accuracy (best and last epoch marked), loss parts,
    the ramp weights w_CE / w_KL (docs/METHOD.md §3) and the learning rate."""
    m = metrics_frame(run)
    ep = m["epoch"].to_numpy()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0, 0]
    for col, label in (("train_acc", "train"), ("test_acc", "test")):
        if has_column(m, col):
            ax.plot(ep, m[col], marker="o", ms=3, label=label)
    if has_column(m, "test_acc"):
        acc = pd.to_numeric(m["test_acc"], errors="coerce").to_numpy()
        b = int(np.nanargmax(acc))
        ax.scatter([ep[b]], [acc[b]], s=90, marker="*", color="crimson", zorder=5,
                   label=f"best (epoch {ep[b]}): {acc[b]:.2%}")
        ax.scatter([ep[-1]], [acc[-1]], s=60, marker="s", color="black", zorder=5,
                   label=f"last (epoch {ep[-1]}): {acc[-1]:.2%}")
    ax.set(title="accuracy", xlabel="epoch", ylabel="accuracy")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    for col in ("loss", "loss_ce", "loss_kl", "loss_rr"):
        if has_column(m, col):
            ax.plot(ep, m[col], marker=".", label=LOSS_LABELS[col])
    ax.set(title="loss parts (epoch means)", xlabel="epoch")
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    for col in ("w_ce", "w_kl"):
        if has_column(m, col):
            ax.plot(ep, m[col], marker=".", label=LOSS_LABELS[col])
    ax.set(title="loss weights (ramps)", xlabel="epoch", ylim=(0, 1.05))
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    if has_column(m, "lr"):
        ax.plot(ep, m["lr"], marker=".")
        ax.set_yscale("log")
    ax.set(title="learning rate", xlabel="epoch")
    for a in axes.flat:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def per_class_accuracy(run, class_names: Sequence[str] | None = None):
    """Bars of per-class test accuracy at the last and the best epoch (summary.json)."""
    s = run.summary if hasattr(run, "summary") else dict(run)
    last = np.asarray(s.get("per_class_acc_last") or [], dtype=float)
    best = np.asarray(s.get("per_class_acc_best") or [], dtype=float)
    if last.size == 0:
        raise ValueError("the run summary has no per_class_acc_last")
    names = class_labels(class_names or s.get("class_names"), last.size)
    x = np.arange(last.size)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    w = 0.38 if best.size else 0.7
    ax.bar(x - (w / 2 if best.size else 0), last, w, label=f"last epoch (mean {last.mean():.2%})")
    if best.size:
        ax.bar(x + w / 2, best, w, label=f"best epoch (mean {best.mean():.2%})")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set(ylim=(0, 1), ylabel="accuracy", title="per-class test accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_matrix(conf, class_names: Sequence[str] | None = None, normalize: bool = True,
                     title: str = "confusion matrix (rows: true class)"):
    """Seaborn heatmap of a [C, C] confusion matrix, rows normalised to sum to 1 when ``normalize``."""
    conf = np.asarray(conf, dtype=float)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {conf.shape}")
    data = conf / np.maximum(conf.sum(1, keepdims=True), 1e-12) if normalize else conf
    names = class_labels(class_names, conf.shape[0])
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    sns.heatmap(data, annot=True, fmt=".2f" if normalize else ".0f", cmap="Blues", ax=ax,
                xticklabels=names, yticklabels=names, vmin=0, vmax=1 if normalize else None, cbar=True)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig
