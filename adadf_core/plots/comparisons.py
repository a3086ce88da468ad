"""Figures of multi-run studies: the ablation and the comparison (Table 2), sensitivity (Table 1), label noise
(Table 4) and the ground-truth panels, each seed a dot and each interval the 95 % interval over seeds."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from adadf_core.studies.groundtruth import TARGETS


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
