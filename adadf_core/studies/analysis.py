"""Analyses the notebooks report as results, computed from runs' records (figures in `plots`): the separability of
the test features (kNN accuracy in the embedding), the t-SNE embedding, the class-distribution rows that are
the threshold fallback (docs/METHOD.md §4), and the tracked samples to show."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score
from sklearn.model_selection import cross_val_score, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(-1)


def separability(features, labels, k: int = 5, seed: int = 0, max_points: int = 3000) -> dict:
    """How well classes separate in feature space: silhouette score (cosine, on standardised features)
    and the cross-validated k-NN accuracy. Higher is better for both. A class with a single face cannot be
    split into folds: it is left out of the k-NN estimate (NaN when fewer than two classes remain)."""
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
    kept = np.isin(y, classes[counts >= 2])
    x, y = x[kept], y[kept]
    folds = int(min(5, counts[counts >= 2].min())) if kept.any() else 0
    if folds >= 2 and len(np.unique(y)) >= 2:
        knn = KNeighborsClassifier(n_neighbors=min(k, max(1, len(x) // folds - 1)))
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        acc = float(cross_val_score(knn, x, y, cv=cv).mean())
    else:
        acc = float("nan")
    return {"silhouette": sil, "knn_acc": acc}


def tsne_embedding(features, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE (sklearn, PCA initialisation, fixed seed) of [N, F] features."""
    x = np.asarray(features, dtype=np.float32)
    perp = float(min(perplexity, max(2.0, (len(x) - 1) / 3)))
    return TSNE(n_components=2, init="pca", random_state=seed, perplexity=perp,
                learning_rate="auto").fit_transform(x)


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


def fallback_counts(runs, threshold: float) -> pd.DataFrame:
    """How many of the C rows of D are the threshold fallback, per epoch (rows; 0 = the initial D) and seed
    (columns ``seed <s>``), over Ada-DF-like ``runs``; a last column ``most`` is the largest count over seeds."""
    columns = {}
    for run in runs:
        dists = run.class_distributions
        if dists is None:
            continue
        columns[f"seed {run.config.seed}"] = [int(fallback_rows(D, threshold).sum()) for D in dists]
    table = pd.DataFrame(columns).rename_axis("epoch")
    if len(table.columns):
        table["most"] = table.max(axis=1)
    return table


# ---------------------------------------------------------------------------------------------
# Figs. 5 and 6: tracked samples

def tracked_arrays(t) -> dict:
    data = t.tracked if hasattr(t, "tracked") and not isinstance(t, dict) else t
    if not data or "fused" not in data:
        raise ValueError("no tracked samples: the run's method does not log label/class/fused distributions")
    return data


def pick_tracked_samples(tracked, n: int = 2) -> list[int]:
    """Positions (into tracked arrays) of an ambiguous and a clear sample: by ground-truth vote entropy
    when the data set has it (SynthFER), else by the last epoch's attention weight (low = ambiguous)."""
    t = tracked_arrays(tracked)
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
