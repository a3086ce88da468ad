"""Figures of multi-run studies: the ablation and the comparison (Table 2), sensitivity (Table 1), label noise
(Table 4) and the ground-truth panels, each seed a dot and each interval the 95 % interval over seeds."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from adadf_core.studies.groundtruth import TARGETS
from adadf_core.studies.paper import PAPER_NUMBERS


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
    """The papers' own numbers on an axis of their own, each point labelled with its backbone; a number
    whose backbone its source does not state is drawn hollow and grey (not comparable)."""
    x = np.arange(len(names))
    vals = np.asarray(values, dtype=float)
    shared = backbones[0] if len(set(backbones)) == 1 and backbones[0] and "not stated" not in backbones[0] else None
    for xi, v, bb in zip(x, vals, backbones):
        if np.isnan(v):
            continue
        stated = bb and "not stated" not in bb
        ax.plot(xi, v, "o", ms=7, color="0.25" if stated else "0.65", mfc=None if stated else "none")
        label = f"{100 * v:.2f}" if shared else f"{100 * v:.2f}\n{bb if stated else 'backbone not stated'}"
        ax.annotate(label, (xi, v), xytext=(0, 6),
                    textcoords="offset points", ha="center", va="bottom", fontsize=7,
                    color="black" if stated else "0.45")
    lo = np.nanmin(vals) if np.isfinite(vals).any() else 0.5
    ax.set_xticks(x, names, rotation=20)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set(ylim=(max(0, lo - 0.04), min(1.0, np.nanmax(vals) + 0.05) if np.isfinite(vals).any() else 1),
           title=f"the papers' numbers ({source}{', ' + shared if shared else ''})", ylabel="test accuracy (best epoch)")


def ablation_bars(table: pd.DataFrame):
    """Table 2 (and the comparison) as a protocol card, as dots with intervals (no bars on a cut axis): per
    variant the best (test-selected), last and mean-of-last-k accuracy, mean over seeds with its 95 %
    interval, and each seed's last-epoch accuracy as a small hollow dot; the paired difference to the
    baseline in a second panel (0 marked); the papers' numbers (with their backbones) in a third panel of
    their own, never on the same axis as ours. Legends sit below the panels."""
    t = table
    names = [str(n) for n in t.index]
    x = np.arange(len(names))
    has_paper = "paper_best_acc" in t and t["paper_best_acc"].notna().any()
    has_diff = "diff_last_acc" in t and t["diff_last_acc"].notna().any()
    ncols = 1 + has_diff + has_paper
    fig, axes = plt.subplots(1, ncols, figsize=(6.0 * ncols, 4.6), squeeze=False)
    ax, w = axes[0, 0], 0.22
    for j, (col, label) in enumerate(SELECTION_STYLE):
        if col in t:
            ax.errorbar(x + (j - 1) * w, t[col].to_numpy(), yerr=_interval(t, col), fmt="o", capsize=3,
                        label=f"{label}: mean [95 % CI]")
    runs = pd.DataFrame(t.attrs.get("runs", []))
    if len(runs) and "last_acc" in runs:
        key = next(c for c in runs.columns if c not in ("seed", "best_acc", "last_acc", "mean_last_k_acc"))
        pos = {n: i for i, n in enumerate(names)}
        mine = runs[runs[key].astype(str).isin(pos)]
        ax.scatter(mine[key].astype(str).map(pos), mine["last_acc"], s=14, facecolor="none",
                   edgecolor="0.3", zorder=3, label="each seed (last)")
    lo, hi = (int(t["runs"].min()), int(t["runs"].max())) if "runs" in t else (1, 1)
    ax.set_xticks(x, names, rotation=20)
    ax.set(ylabel="test accuracy (fraction)",
           title=f"this study: {hi} seed(s)" if lo == hi else f"this study: {lo} to {hi} seeds a row (the table says which)")
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    k = 1
    if has_diff:
        ax = axes[0, k]
        k += 1
        for j, (col, label) in enumerate(SELECTION_STYLE):
            d = f"diff_{col}"
            if d in t:
                ax.errorbar(x + (j - 1) * w, t[d].to_numpy(), yerr=_interval(t, d), fmt="o", capsize=3,
                            label=f"{label}: mean [95 % CI]")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, names, rotation=20)
        ax.set(ylabel="paired difference to the baseline", title="Δ vs baseline (same seeds)")
        ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))
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
    """Table 4: test accuracy against the symmetric noise rate, one colour per method: the last epoch's mean
    over seeds (solid) with its 95 % interval as error bars and every seed as a dot (so one collapsed seed
    shows as one dot, not as a wide band); best (test-selected) dashed. The paper's numbers (RAF-DB, Table 4,
    and Table 2 at 0 %) in a panel of their own; external-label-file rows as text beside the axes."""
    has_paper = "paper_acc" in table and table["paper_acc"].notna().any()
    fig, axes = plt.subplots(1, 1 + has_paper, figsize=(7.5 + 4.5 * has_paper, 4.2), squeeze=False,
                             gridspec_kw={"width_ratios": [1.6, 1][: 1 + has_paper]})
    ax, cmap = axes[0, 0], plt.get_cmap("tab10")
    numeric = pd.to_numeric(table["noise"], errors="coerce")
    methods = list(dict.fromkeys(table["method"]))
    runs = pd.DataFrame(table.attrs.get("runs", []))
    rates = sorted(numeric.dropna().unique())
    step = (min(np.diff(rates)) if len(rates) > 1 else 0.1) * 0.06
    for i, m in enumerate(methods):
        sub = table[(table["method"] == m) & numeric.notna()].assign(rate=numeric).sort_values("rate")
        if not len(sub):
            continue
        shift = (i - (len(methods) - 1) / 2) * step          # methods side by side at each rate
        if "last_acc_lo" in sub and sub["last_acc_lo"].notna().any():
            err = [sub["last_acc"] - sub["last_acc_lo"], sub["last_acc_hi"] - sub["last_acc"]]
            ax.errorbar(sub["rate"] + shift, sub["last_acc"], yerr=err, fmt="s-", color=cmap(i), capsize=3,
                        label=f"{m}: last epoch, mean [95 % CI]")
        else:
            ax.plot(sub["rate"] + shift, sub["last_acc"], "s-", color=cmap(i), label=f"{m}: last epoch")
        ax.plot(sub["rate"] + shift, sub["best_acc"], "o--", color=cmap(i), alpha=0.5, label=f"{m}: best (test-selected)")
        if len(runs):
            mine = runs[(runs["method"] == m) & pd.to_numeric(runs["noise"], errors="coerce").notna()]
            ax.scatter(pd.to_numeric(mine["noise"]) + shift, mine["last_acc"], s=16, facecolor="none",
                       edgecolor=cmap(i), zorder=3, label=f"{m}: each seed (last)")
    files = table[numeric.isna()]
    if len(files):
        text = "\n".join(f"{r.method} @ {r.noise}: last {r.last_acc:.2%}" for r in files.itertuples())
        ax.text(1.02, 0.0, "label files:\n" + text, transform=ax.transAxes, fontsize=7, va="bottom")
    seeds = int(table["runs"].max()) if "runs" in table else 1
    ax.set_xticks(rates, [f"{r:.0%}" for r in rates])
    ax.set(xlabel="symmetric label noise", ylabel="test accuracy (fraction)",
           title=f"label noise (paper Table 4): this study, {seeds} seed(s)")
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    if has_paper:
        _paper_noise_panel(axes[0, 1], table, methods, cmap)
    fig.tight_layout()
    return fig


def noise_curves(table: pd.DataFrame):
    """Table 4 over epochs: one panel per noise rate; per method its test accuracy on the curve split (solid)
    and its accuracy on the labels it trains on (dashed), each the mean over seeds, and a grey line at the
    share of clean training labels. A dashed line above the grey one is a method fitting flipped labels."""
    curves = pd.DataFrame(table.attrs.get("curves", []))
    if curves.empty:
        raise ValueError("noise_curves needs a noise_study table (its attrs['curves'] are missing)")
    curves = curves[pd.to_numeric(curves["noise"], errors="coerce").notna()]
    rates = sorted(curves["noise"].unique(), key=float)
    methods = list(dict.fromkeys(curves["method"]))
    fig, axes = plt.subplots(1, len(rates), figsize=(3.4 * len(rates), 3.4), sharey=True, squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, rate in zip(axes[0], rates):
        for i, m in enumerate(methods):
            sub = curves[(curves["method"] == m) & (curves["noise"] == rate)]
            if sub.empty:
                continue
            epochs = np.asarray(sub["epoch"].iloc[0])
            for key, style, what in (("test", "-", "test (curve split)"), ("train", "--", "train, its labels")):
                ax.plot(epochs, np.mean(np.stack(sub[key].to_numpy()), axis=0), style, color=cmap(i),
                        label=f"{m}: {what}")
        ax.axhline(1 - float(rate), color="0.6", lw=1, label="share of clean training labels")
        ax.set(title=f"{float(rate):.0%} noise, {curves['seed'].nunique()} seed(s)", xlabel="epoch")
        ax.set_xticks(sorted({int(e) for e in curves["epoch"].iloc[0]}))
    axes[0, 0].set_ylabel("accuracy (fraction, mean over seeds)")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def _paper_noise_panel(ax, table: pd.DataFrame, methods: list, cmap) -> None:
    """The paper's Table 4 numbers per method, with Table 2's clean (0 %) number where it has one."""
    numeric = pd.to_numeric(table["noise"], errors="coerce")
    pap = table[table["paper_acc"].notna()].assign(rate=numeric).sort_values(["method", "rate"])
    clean = PAPER_NUMBERS["ablation"]["raf"]
    for i, m in enumerate(methods):
        sub = pap[pap["method"] == m]
        xs, ys = list(sub["rate"]), list(sub["paper_acc"])
        if m in clean and isinstance(clean[m], float):
            xs, ys = [0.0] + xs, [clean[m] / 100] + ys
        if xs:
            ax.plot(xs, ys, "o-", color=cmap(i), label=m)
    src = str(table["paper_source"].iloc[0]) if "paper_source" in table else "paper"
    ax.set_xticks([0.0, 0.1, 0.2, 0.3], ["0%", "10%", "20%", "30%"])
    ax.set_xlabel("symmetric label noise")
    ax.set_title(f"the paper's numbers\n{src}; 0 %: Table 2 (best epoch)", fontsize=9)
    ax.legend(fontsize=7)


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
