"""Figures of faces: SynthFER samples, predictions on photographs (notebook 09), and the alignment figures of
notebook 01 (detections, the five-point template, before and after)."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle
from PIL import Image

from adadf_core.data.align import LANDMARK_NAMES, load_rgb, reference_template
from adadf_core.data.align.geometry import size_wh
from adadf_core.data.synthfer import CLASS_NAMES, SynthFERError
from adadf_core.utils.fileio import atomic_write


def synthfer_samples(root: str | Path, per_class: int = 8, split: str = "train"):
    """SynthFER (or any RAF-DB layout root): one row per class, ``per_class`` aligned samples of ``split``.

    Each tile's title is the majority label and, where ``EmoLabel/distribution.csv`` exists, its vote share.
    """
    root = Path(root)
    label_file = root / "EmoLabel" / "list_patition_label.txt"
    if not label_file.exists():
        raise SynthFERError(f"{label_file} not found: {root} is not a SynthFER/RAF-DB root")
    shares: dict[str, float] = {}
    dist_file = root / "EmoLabel" / "distribution.csv"
    if dist_file.exists():
        rows = dist_file.read_text().splitlines()
        for row in rows[1:]:
            parts = row.split(",")
            shares[parts[0]] = max(float(v) for v in parts[2:2 + len(CLASS_NAMES)])
    by_class: dict[int, list[str]] = {i: [] for i in range(len(CLASS_NAMES))}
    for line in label_file.read_text().splitlines():
        if line.startswith(split + "_"):
            name, lab = line.split()
            if len(by_class[int(lab) - 1]) < per_class:
                by_class[int(lab) - 1].append(name)
    fig, axes = plt.subplots(len(CLASS_NAMES), per_class, figsize=(1.3 * per_class, 1.45 * len(CLASS_NAMES)),
                             squeeze=False)
    for ci, cname in enumerate(CLASS_NAMES):
        for j in range(per_class):
            ax = axes[ci][j]
            ax.axis("off")
            if j < len(by_class[ci]):
                name = by_class[ci][j]
                img = Image.open(root / "Image" / "aligned" / f"{Path(name).stem}_aligned.jpg").convert("RGB")
                ax.imshow(np.asarray(img))
                share = f" {shares[name]:.0%}" if name in shares else ""
                ax.set_title(f"{cname}{share}", fontsize=7)
    fig.suptitle(f"SynthFER {split} samples by majority label (title: label, vote share)", fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Fig. 3: t-SNE and separability

def prediction_panel(images, probs, class_names: Sequence[str], titles: Sequence[str] | None = None,
                     votes=None, note: str | None = None):
    """Notebook 09: each face beside its predicted class probabilities (and, for SynthFER, the annotators'
    vote shares as a second set of bars); ``note`` (what the model has seen) as the figure's heading."""
    n, c = len(images), len(class_names)
    fig, axes = plt.subplots(n, 2, figsize=(8, 1.9 * n), squeeze=False, gridspec_kw={"width_ratios": [1, 2.4]})
    y = np.arange(c)
    for k in range(n):
        axes[k, 0].imshow(images[k])
        axes[k, 0].set_axis_off()
        if titles is not None:
            axes[k, 0].set_title(str(titles[k]), fontsize=8)
        ax = axes[k, 1]
        h = 0.4 if votes is not None else 0.8
        ax.barh(y - (h / 2 if votes is not None else 0), probs[k], height=h, color="tab:blue", label="Ada-DF")
        if votes is not None:
            ax.barh(y + h / 2, votes[k], height=h, color="tab:orange", label="annotators' votes")
        ax.set_yticks(y, class_names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        if k == 0:
            ax.legend(fontsize=7, loc="lower right")
    axes[-1, 1].set_xlabel("probability")
    if note:
        fig.suptitle("\n".join(textwrap.wrap(note, 95)), fontsize=8, color="tab:red")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# alignment (notebook 01)
#
# The faces and templates come from `adadf_core.data.align` (imported inside each function, so importing
# plots stays as light as before). Each function returns its Figure and also writes it as PNG to ``path``
# when given.

def plot_manifest_examples(src: str | Path, dst: str | Path, manifest: pd.DataFrame, n: int = 8,
                           statuses: Sequence[str] = ("aligned", "skipped_existing"),
                           path: str | Path | None = None):
    """Before/after grid for the first ``n`` manifest rows (`align.align_folder`) with one of ``statuses``:
    the source image with the landmarks the manifest recorded, above the aligned output."""
    src, dst = Path(src), Path(dst)
    rows = manifest[manifest["status"].isin(statuses)].head(n)
    if rows.empty:
        raise ValueError(f"the manifest has no rows with status {list(statuses)} to show")
    befores, points, afters, titles = [], [], [], []
    for row in rows.itertuples(index=False):
        befores.append(load_rgb(src / row.source)[0])
        xy = np.array([[getattr(row, f"{name}_x"), getattr(row, f"{name}_y")] for name in LANDMARK_NAMES], float)
        points.append(None if np.isnan(xy).any() else xy)
        out = dst / str(row.output)
        afters.append(load_rgb(out)[0] if row.output and out.is_file() else None)
        titles.append(Path(row.source).name)
    size = tuple(afters[0].shape[1::-1]) if afters[0] is not None else 100
    return plot_before_after(befores, points, afters, titles=titles, size=size, path=path)


def _draw_detection(ax, face, colour="lime", label=True) -> None:
    """One `align.Face` on ``ax``: its box, the detector score above it and the five landmarks."""
    x1, y1, x2, y2 = face.box
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.5))
    ax.scatter(face.landmarks[:, 0], face.landmarks[:, 1], s=14, c=["red", "red", "yellow", "cyan", "cyan"],
               edgecolors="black", linewidths=0.5, zorder=3)
    if label:
        ax.text(x1, y1 - 3, f"{face.confidence:.3f}", color=colour, fontsize=7, va="bottom")


def plot_detections(images: Mapping[str, np.ndarray], faces: Sequence[Sequence], ncols: int = 4,
                    path: str | Path | None = None):
    """Photos with every detected box (`align.Face`; detector score above it) and the five landmarks
    (eyes red, nose yellow, mouth corners cyan). Saved to ``path`` (PNG) when given."""
    names = list(images)
    ncols = max(1, min(ncols, len(names)))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name, found in zip(axes.flat, names, faces):
        ax.imshow(images[name])
        for face in found:
            _draw_detection(ax, face)
        ax.set_title(f"{name}: {len(found)} face(s)", fontsize=8)
    fig.tight_layout()
    _save_alignment_figure(fig, path)
    return fig


def plot_template(size: int | tuple[int, int] = 100, template: np.ndarray | None = None, ax=None,
                  path: str | Path | None = None):
    """The five template points (`align.reference_template`) on an empty output canvas, labelled with
    their coordinates. Draws into ``ax`` when given (then ``path`` is ignored)."""
    width, height = size_wh(size)
    template = reference_template((width, height)) if template is None else np.asarray(template)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(3.4, 3.4 * height / width))
    ax.imshow(np.full((height, width), 235, np.uint8), cmap="gray", vmin=0, vmax=255)
    ax.scatter(template[:, 0], template[:, 1], c=["red", "red", "yellow", "cyan", "cyan"], edgecolors="black", s=30)
    for name, (x, y) in zip(LANDMARK_NAMES, template):
        ax.annotate(f"{name}\n({x:.1f}, {y:.1f})", (x, y), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=6)
    ax.set_title(f"template, {width}x{height}", fontsize=9)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    if fig is not None:
        fig.tight_layout()
        _save_alignment_figure(fig, path)
    return fig if fig is not None else ax.figure


def plot_before_after(befores: Sequence[np.ndarray], landmarks: Sequence[np.ndarray | None],
                      afters: Sequence[np.ndarray | None], titles: Sequence[str] | None = None,
                      size: int | tuple[int, int] = 100, path: str | Path | None = None):
    """Two rows: the unaligned images with their landmarks, and the aligned crops with the template points
    (an image without landmarks shows 'no face' below it)."""
    n = len(befores)
    template = reference_template(size)
    fig, axes = plt.subplots(2, n, figsize=(2.0 * n, 4.3), squeeze=False)
    for i in range(n):
        top, bottom = axes[0, i], axes[1, i]
        top.imshow(befores[i])
        if landmarks[i] is not None:
            top.scatter(landmarks[i][:, 0], landmarks[i][:, 1], s=8, c="red")
        if titles is not None:
            top.set_title(titles[i], fontsize=7)
        if afters[i] is not None:
            bottom.imshow(afters[i])
            bottom.scatter(template[:, 0], template[:, 1], s=8, c="cyan", marker="+")
        else:
            bottom.text(0.5, 0.5, "no face", ha="center", va="center", transform=bottom.transAxes)
        top.axis("off")
        bottom.axis("off")
    axes[0, 0].text(-0.08, 0.5, "before", rotation=90, va="center", ha="right", transform=axes[0, 0].transAxes)
    axes[1, 0].text(-0.08, 0.5, "aligned", rotation=90, va="center", ha="right", transform=axes[1, 0].transAxes)
    fig.tight_layout()
    _save_alignment_figure(fig, path)
    return fig


def _save_alignment_figure(fig, path) -> None:
    """The alignment figures' own ``path=`` argument (any file name, 130 dpi), kept from align.py."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, bbox_inches="tight",
                                                   format=path.suffix.lstrip(".") or "png"))
