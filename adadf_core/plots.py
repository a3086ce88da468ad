"""Every figure the notebooks show. Each function returns a matplotlib Figure; ``save_figure`` writes it.

Functions take either a ``Run`` (anything with ``.metrics``, ``.summary``, ...) or the plain arrays the
run folder holds (docs/ARCHITECTURE.md, run folder contract). Figure numbers refer to the paper.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .fileio import atomic_write

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
        from IPython.display import display
        display(fig)
    except ImportError:
        pass
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# helpers

def _metrics(x) -> pd.DataFrame:
    m = x if isinstance(x, pd.DataFrame) else getattr(x, "metrics", None)
    if m is None or len(m) == 0:
        raise ValueError("no metrics: the run has no finished epoch yet (metrics.csv is empty)")
    return m


def _has(m: pd.DataFrame, col: str) -> bool:
    return col in m.columns and pd.to_numeric(m[col], errors="coerce").notna().any()


def _class_names(names: Optional[Sequence[str]], c: int) -> list[str]:
    return list(names) if names is not None and len(names) == c else [f"class {i}" for i in range(c)]


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(-1)


# ---------------------------------------------------------------------------------------------
# training curves

LOSS_LABELS = {"loss": "total", "loss_ce": "L_CE (auxiliary branch)", "loss_kl": "L_KL (target branch)",
               "loss_rr": "L_RR (rank regularisation)", "w_ce": "w_CE", "w_kl": "w_KL"}


def learning_curves(run, title: str | None = None):
    """2×2 panels from metrics.csv: train/test accuracy (best and last epoch marked), loss parts,
    the ramp weights w_CE / w_KL (docs/METHOD.md §3) and the learning rate."""
    m = _metrics(run)
    ep = m["epoch"].to_numpy()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0, 0]
    for col, label in (("train_acc", "train"), ("test_acc", "test")):
        if _has(m, col):
            ax.plot(ep, m[col], marker="o", ms=3, label=label)
    if _has(m, "test_acc"):
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
        if _has(m, col):
            ax.plot(ep, m[col], marker=".", label=LOSS_LABELS[col])
    ax.set(title="loss parts (epoch means)", xlabel="epoch")
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    for col in ("w_ce", "w_kl"):
        if _has(m, col):
            ax.plot(ep, m[col], marker=".", label=LOSS_LABELS[col])
    ax.set(title="loss weights (ramps)", xlabel="epoch", ylim=(0, 1.05))
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    if _has(m, "lr"):
        ax.plot(ep, m["lr"], marker=".")
        ax.set_yscale("log")
    ax.set(title="learning rate", xlabel="epoch")
    from matplotlib.ticker import MaxNLocator
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
    names = _class_names(class_names or s.get("class_names"), last.size)
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


def synthfer_samples(root: str | Path, per_class: int = 8, split: str = "train"):
    """SynthFER (or any RAF-DB layout root): one row per class, ``per_class`` aligned samples of ``split``.

    Each tile's title is the majority label and, where ``EmoLabel/distribution.csv`` exists, its vote share.
    """
    from PIL import Image

    from .synthfer import CLASS_NAMES, SynthFERError

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


def confusion_matrix(conf, class_names: Sequence[str] | None = None, normalize: bool = True,
                     title: str = "confusion matrix (rows: true class)"):
    """Seaborn heatmap of a [C, C] confusion matrix, rows normalised to sum to 1 when ``normalize``."""
    import seaborn as sns

    conf = np.asarray(conf, dtype=float)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {conf.shape}")
    data = conf / np.maximum(conf.sum(1, keepdims=True), 1e-12) if normalize else conf
    names = _class_names(class_names, conf.shape[0])
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    sns.heatmap(data, annot=True, fmt=".2f" if normalize else ".0f", cmap="Blues", ax=ax,
                xticklabels=names, yticklabels=names, vmin=0, vmax=1 if normalize else None, cbar=True)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Fig. 3: t-SNE and separability

def prediction_panel(images, probs, class_names: Sequence[str], titles: Sequence[str] | None = None,
                     votes=None):
    """Notebook 09: each face beside its predicted class probabilities (and, for SynthFER, the annotators'
    vote shares as a second set of bars)."""
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
    fig.tight_layout()
    return fig


def separability(features, labels, k: int = 5, seed: int = 0, max_points: int = 3000) -> dict:
    """How well classes separate in feature space: silhouette score (cosine, on standardised features)
    and the cross-validated k-NN accuracy. Higher is better for both."""
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if len(x) > max_points:
        keep = np.random.default_rng(seed).choice(len(x), max_points, replace=False)
        x, y = x[keep], y[keep]
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError("separability needs at least two classes")
    x = StandardScaler().fit_transform(x)
    sil = float(silhouette_score(x, y, metric="cosine"))
    folds = int(min(5, counts.min()))
    if folds >= 2:
        knn = KNeighborsClassifier(n_neighbors=min(k, max(1, len(x) // folds - 1)))
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        acc = float(cross_val_score(knn, x, y, cv=cv).mean())
    else:
        acc = float("nan")
    return {"silhouette": sil, "knn_acc": acc}


def tsne_embedding(features, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE (sklearn, PCA initialisation, fixed seed) of [N, F] features."""
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float32)
    perp = float(min(perplexity, max(2.0, (len(x) - 1) / 3)))
    return TSNE(n_components=2, init="pca", random_state=seed, perplexity=perp,
                learning_rate="auto").fit_transform(x)


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
        names = _class_names(class_names, int(max(y.max() + 1, len(class_names or []))))
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


# ---------------------------------------------------------------------------------------------
# Fig. 4: class distributions

def fallback_rows(D, threshold: float | None = None, atol: float = 1e-5) -> np.ndarray:
    """Boolean [C]: rows of D that are the threshold distribution (diagonal = t, off-diagonal all equal),
    i.e. classes whose mined mean prediction did not reach t (docs/METHOD.md §4)."""
    D = np.asarray(D, dtype=np.float64)
    c = D.shape[0]
    out = np.zeros(c, dtype=bool)
    for i in range(c):
        off = np.delete(D[i], i)
        flat = np.ptp(off) <= atol
        diag_ok = threshold is None or abs(D[i, i] - threshold) <= atol
        out[i] = flat and diag_ok
    return out


def class_distribution_heatmap(D, class_names: Sequence[str] | None = None, threshold: float | None = None,
                               title: str = "class distributions D (rows: class, columns: description degree)"):
    """Fig. 4: the [C, C] matrix D as an annotated heatmap; rows that fell back to the threshold
    distribution are marked "(fallback)" and outlined."""
    import seaborn as sns
    from matplotlib.patches import Rectangle

    D = np.asarray(D, dtype=np.float64)
    names = _class_names(class_names, D.shape[0])
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
    names = _class_names(class_names, c)
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
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch (0 = initial D)", ylabel="D[c, c]", ylim=(0, 1.02),
           title="diagonal of D over epochs (x = threshold fallback)")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Figs. 5 and 6: tracked samples

def _tracked(t) -> dict:
    data = t.tracked if hasattr(t, "tracked") and not isinstance(t, dict) else t
    if not data or "fused" not in data:
        raise ValueError("no tracked samples: the run's method does not log label/class/fused distributions")
    return data


def pick_tracked_samples(tracked, n: int = 2) -> list[int]:
    """Positions (into tracked arrays) of an ambiguous and a clear sample: by ground-truth vote entropy
    when the data set has it (SynthFER), else by the last epoch's attention weight (low = ambiguous)."""
    t = _tracked(tracked)
    k = t["fused"].shape[1]
    gt = t.get("gt")
    if gt is not None and np.asarray(gt).size and np.isfinite(gt).all():
        score = _entropy(gt)                               # high = ambiguous
    else:
        score = -np.asarray(t["attention_weight"])[-1]     # low weight = ambiguous
    order = np.argsort(-score, kind="stable")
    picks = [int(order[0]), int(order[-1])] if k > 1 else [0]
    for i in order:                                         # more when asked for
        if len(picks) >= min(n, k):
            break
        if int(i) not in picks:
            picks.append(int(i))
    return picks[:max(1, min(n, k))]


def fusion_sample(tracked, k: int, epoch: int = -1, class_names: Sequence[str] | None = None):
    """Fig. 5 for tracked sample ``k``: bars of its label distribution d, class distribution D[y], the
    fused target f and (SynthFER) the ground-truth vote distribution; title gives the attention weight."""
    t = _tracked(tracked)
    d, cd, f = (np.asarray(t[key])[epoch, k] for key in ("label_dist", "class_dist", "fused"))
    c = d.shape[-1]
    names = _class_names(class_names, c)
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
    t = _tracked(tracked)
    d = np.asarray(t["label_dist"])[:, k]
    f = np.asarray(t["fused"])[:, k]
    w = np.asarray(t["attention_weight"])[:, k]
    n_ep, c = d.shape
    names = _class_names(class_names, c)
    y = int(np.asarray(t["labels"])[k])
    from matplotlib.ticker import MaxNLocator

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
    m = _metrics(run)
    cols = [f"{kind}_gt_{what}" for kind in ("kl", "js") for what in ("label", "class", "fused")]
    if not any(_has(m, c) for c in cols):
        raise ValueError("metrics.csv has no divergence columns (kl_gt_*, js_gt_*): they exist on SynthFER only")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, kind in zip(axes, ("kl", "js")):
        for what in ("label", "class", "fused"):
            col = f"{kind}_gt_{what}"
            if _has(m, col):
                ax.plot(m["epoch"], m[col], marker=".", label=f"{kind.upper()}(gt ‖ {what})")
        ax.set(title=f"{kind.upper()} divergence to the ground-truth votes", xlabel="epoch")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# study plots

SELECTION_STYLE = (("best_acc", "best (test-selected)"), ("last_acc", "last"), ("mean_last_k_acc", "mean last k"))


def _interval(t: pd.DataFrame, col: str):
    """Asymmetric error bars [2, n] from a protocol card's ``<col>_lo`` / ``<col>_hi`` (None without)."""
    lo, hi = t.get(f"{col}_lo"), t.get(f"{col}_hi")
    if lo is None or hi is None or lo.isna().all():
        return None
    return np.vstack([(t[col] - lo).fillna(0).to_numpy(), (hi - t[col]).fillna(0).to_numpy()])


def _paper_panel(ax, names: Sequence[str], values, backbones: Sequence[str], source: str) -> None:
    """The papers' own numbers on an axis of their own, each bar labelled with its backbone."""
    x = np.arange(len(names))
    vals = np.asarray(values, dtype=float)
    ax.bar(x[~np.isnan(vals)], vals[~np.isnan(vals)], 0.6, color="0.6")
    for xi, v, bb in zip(x, vals, backbones):
        if not np.isnan(v):
            ax.text(xi, v, f"{100 * v:.2f}\n{bb}", ha="center", va="bottom", fontsize=7)
    lo = np.nanmin(vals) if np.isfinite(vals).any() else 0.5
    ax.set_xticks(x, names, rotation=20)
    ax.set(ylim=(max(0, lo - 0.06), min(1.0, np.nanmax(vals) + 0.05) if np.isfinite(vals).any() else 1),
           title=f"the papers' numbers ({source})", ylabel="test accuracy (best epoch)")


def ablation_bars(table: pd.DataFrame):
    """Table 2 (and the comparison) as a protocol card: per variant the best (test-selected), last and
    mean-of-last-k accuracy, mean over seeds with 95 % interval bars; the paired difference to the
    baseline in a second panel; the papers' numbers (with their backbones) in a third panel of their
    own, never on the same axis as our bars."""
    t = table
    names = [str(n) for n in t.index]
    x = np.arange(len(names))
    has_paper = "paper_best_acc" in t and t["paper_best_acc"].notna().any()
    has_diff = "diff_last_acc" in t and t["diff_last_acc"].notna().any()
    ncols = 1 + has_diff + has_paper
    fig, axes = plt.subplots(1, ncols, figsize=(6.5 * ncols, 4.4), squeeze=False)
    ax = axes[0, 0]
    w = 0.27
    for j, (col, label) in enumerate(SELECTION_STYLE):
        if col in t:
            ax.bar(x + (j - 1) * w, t[col].to_numpy(), w, yerr=_interval(t, col), capsize=3, label=label)
    lo = float(np.nanmin(t[[c for c, _ in SELECTION_STYLE if c in t]].to_numpy()))
    seeds = int(t["runs"].max()) if "runs" in t else 1
    ax.set_xticks(x, names, rotation=20)
    ax.set(ylabel="test accuracy", ylim=(max(0, lo - 0.08), min(1, float(np.nanmax(t["best_acc"])) + 0.06)),
           title=f"ours: mean of {seeds} seed(s), 95 % interval")
    ax.legend(fontsize=7, loc="lower right")
    k = 1
    if has_diff:
        ax = axes[0, k]
        k += 1
        for j, (col, label) in enumerate(SELECTION_STYLE):
            d = f"diff_{col}"
            if d in t:
                ax.bar(x + (j - 1) * w, t[d].to_numpy(), w, yerr=_interval(t, d), capsize=3, label=label)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, names, rotation=20)
        ax.set(ylabel="paired difference to the baseline", title="Δ vs baseline (same seeds), 95 % interval")
        ax.legend(fontsize=7)
    if has_paper:
        src = str(t["paper_source"].iloc[0]) if "paper_source" in t else "paper"
        backbones = list(t["paper_backbone"]) if "paper_backbone" in t else \
            [src.split(", ")[1] if ", " in src else ""] * len(t)
        _paper_panel(axes[0, k], names, t["paper_best_acc"], backbones, src.split(",")[0])
    fig.tight_layout()
    return fig


def sensitivity_lines(table: pd.DataFrame):
    """Table 1: one panel per hyper-parameter, best (test-selected) and last accuracy against its value,
    with 95 % interval bars when the points have several seeds."""
    params = list(dict.fromkeys(table["param"]))
    if not params:
        raise ValueError("empty sensitivity table")
    fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params), 3.6), squeeze=False, sharey=True)
    for ax, p in zip(axes[0], params):
        sub = table[table["param"] == p].sort_values("value")
        for col, style, label in (("best_acc", "o-", "best (test-selected)"), ("last_acc", "s--", "last")):
            ax.errorbar(sub["value"].astype(float), sub[col], yerr=_interval(sub, col), fmt=style, capsize=3,
                        label=label)
        base = sub[sub["is_base"]] if "is_base" in sub else sub.iloc[:0]
        if len(base):
            ax.axvline(float(base["value"].iloc[0]), color="grey", ls=":", label="preset")
        ax.set(title=p, xlabel=p)
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("test accuracy")
    seeds = int(table["runs"].max()) if "runs" in table else 1
    fig.suptitle(f"sensitivity (paper Table 1): one factor at a time, {seeds} seed(s) per point")
    fig.tight_layout()
    return fig


def noise_plot(table: pd.DataFrame):
    """Table 4: accuracy against symmetric noise rate, one colour per method, last epoch solid and best
    (test-selected) dashed, mean over seeds with a 95 % band; the paper's numbers (RAF-DB) in a panel of
    their own; external-label-file rows as text beside the axes."""
    has_paper = "paper_acc" in table and table["paper_acc"].notna().any()
    fig, axes = plt.subplots(1, 1 + has_paper, figsize=(7 + 4.5 * has_paper, 4.2), squeeze=False,
                             gridspec_kw={"width_ratios": [1.6, 1][: 1 + has_paper]})
    ax = axes[0, 0]
    cmap = plt.get_cmap("tab10")
    numeric = pd.to_numeric(table["noise"], errors="coerce")
    for i, m in enumerate(dict.fromkeys(table["method"])):
        sub = table[(table["method"] == m) & numeric.notna()].assign(rate=numeric).sort_values("rate")
        if not len(sub):
            continue
        for col, style, label in (("last_acc", "s-", "last"), ("best_acc", "o--", "best (test-selected)")):
            ax.plot(sub["rate"], sub[col], style, color=cmap(i), alpha=1 if col == "last_acc" else 0.6,
                    label=f"{m} {label}")
            if f"{col}_lo" in sub and sub[f"{col}_lo"].notna().any():
                ax.fill_between(sub["rate"], sub[f"{col}_lo"], sub[f"{col}_hi"], color=cmap(i),
                                alpha=0.15 if col == "last_acc" else 0.06)
    files = table[numeric.isna()]
    if len(files):
        text = "\n".join(f"{r.method} @ {r.noise}: last {r.last_acc:.2%}" for r in files.itertuples())
        ax.text(1.02, 0.0, "label files:\n" + text, transform=ax.transAxes, fontsize=7, va="bottom")
    seeds = int(table["runs"].max()) if "runs" in table else 1
    ax.set(xlabel="symmetric noise rate", ylabel="test accuracy",
           title=f"label noise (paper Table 4): ours, {seeds} seed(s), 95 % band")
    ax.legend(fontsize=7, ncol=2)
    if has_paper:
        pap = table[table["paper_acc"].notna()].assign(rate=numeric).sort_values(["method", "rate"])
        ax2 = axes[0, 1]
        for i, m in enumerate(dict.fromkeys(table["method"])):
            sub = pap[pap["method"] == m]
            if len(sub):
                ax2.plot(sub["rate"], sub["paper_acc"], "o-", color=cmap(i), label=m)
        src = str(table["paper_source"].iloc[0]) if "paper_source" in table else "paper"
        ax2.set(xlabel="symmetric noise rate", title=f"the paper's numbers\n({src})")
        ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def ground_truth_panels(divergence: pd.DataFrame, attention: pd.DataFrame, example: pd.DataFrame):
    """SynthFER's ground truth (groundtruth.py): JS divergence to the votes of d, D[y] and f per group of
    faces (all, by ambiguity third, flipped / clean) with 95 % intervals over seeds; the attention ā of one
    run's faces against their vote entropy; the attention summaries with their intervals."""
    from .groundtruth import TARGETS

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6), gridspec_kw={"width_ratios": [1.7, 1, 1]})
    ax = axes[0]
    groups = list(dict.fromkeys(divergence["group"]))
    x = np.arange(len(groups))
    w = 0.27
    for j, target in enumerate(TARGETS):
        sub = divergence[divergence["target"] == target].set_index("group").reindex(groups)
        err = np.vstack([(sub["mean"] - sub["ci_lo"]).fillna(0), (sub["ci_hi"] - sub["mean"]).fillna(0)])
        ax.bar(x + (j - 1) * w, sub["mean"], w, yerr=err, capsize=3, label=TARGETS[target])
    ax.set_xticks(x, [g.replace(" (vote entropy)", "") for g in groups], rotation=15)
    seeds = int(divergence["seeds"].max())
    ax.set(ylabel="JS divergence to the annotators' votes", title=f"closeness to the true label distribution "
           f"(lower is closer; {seeds} seed(s), 95 % interval)")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.scatter(example["entropy"], example["attention"], s=6, alpha=0.4,
               c=np.where(example["flipped"], "crimson", "tab:blue"))
    row = attention.set_index("quantity").loc["Spearman(ā, vote entropy)"]
    ax.set(xlabel="vote entropy (ambiguity)", ylabel="attention ā (mean of the two heads)",
           title=f"one run's faces (red: flipped label)\nSpearman over seeds {row['mean']:+.3f}")
    ax = axes[2]
    sub = attention[~attention["quantity"].str.startswith("Spearman")]
    y = np.arange(len(sub))
    ax.errorbar(sub["mean"], y, xerr=np.vstack([(sub["mean"] - sub["ci_lo"]).fillna(0),
                                                (sub["ci_hi"] - sub["mean"]).fillna(0)]), fmt="o", capsize=3)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(y, sub["quantity"])
    ax.set(xlabel="attention ā (mean, 95 % interval over seeds)", title="attention by ambiguity and label noise")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# alignment (notebook 01)
#
# The faces and templates come from `adadf_core.align` (imported inside each function, so importing
# plots stays as light as before). Each function returns its Figure and also writes it as PNG to ``path``
# when given.

def plot_manifest_examples(src: str | Path, dst: str | Path, manifest: pd.DataFrame, n: int = 8,
                           statuses: Sequence[str] = ("aligned", "skipped_existing"),
                           path: str | Path | None = None):
    """Before/after grid for the first ``n`` manifest rows (`align.align_folder`) with one of ``statuses``:
    the source image with the landmarks the manifest recorded, above the aligned output."""
    from .align import LANDMARK_NAMES, load_rgb

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
    from matplotlib.patches import Rectangle

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
    from .align import LANDMARK_NAMES, reference_template
    from .align.geometry import size_wh

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
    from .align import reference_template

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
