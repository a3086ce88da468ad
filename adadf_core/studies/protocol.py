"""The protocol card: how every accuracy this project reports was selected, over how many seeds, with
which interval (docs/METHOD.md §7).

Papers in this field report different things under the name "accuracy": the best epoch on the test set
(Ada-DF, SCN), the last epoch, the mean of the last epochs, the maximum of several runs. The card reports
all the cheap ones side by side for every run and every group of runs:

* three selections per run (``SELECTIONS``): ``best`` (the epoch with the highest test accuracy: selected
  **on the test set**, so optimistic), ``last`` (the final epoch) and ``mean_last_k`` (the mean of the last
  k = min(5, epochs) epochs);
* two scores each: overall accuracy (``acc``) and balanced accuracy (``balanced``, the mean of the
  per-class accuracies, at the same epochs);
* over the n seeds of a group: mean, standard deviation and a 95 % confidence interval of the mean
  (Student's t with n - 1 degrees of freedom);
* for each group, the **paired** difference to the baseline over the seeds both have (same seed = same
  data order, initial head and augmentation draws), with its own 95 % interval: the interval that says
  whether a method beats the baseline at this budget.

    scores = run_scores(run)                       # one run: best / last / mean_last_k x acc / balanced
    card = protocol_card(per_run, by=["method"])   # groups of runs: mean, std, CI, paired difference
    text = card_markdown(card)                     # the table every notebook saves
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

SELECTIONS = ("best", "last", "mean_last_k")
SCORES = ("acc", "balanced")
METRICS = tuple(f"{sel}_{score}" for score in SCORES for sel in SELECTIONS)
SELECTION_TEXT = {
    "best": "best epoch (selected on the test set)",
    "last": "last epoch",
    "mean_last_k": "mean of the last k epochs",
}
LEVEL = 0.95


def last_k(epochs: int) -> int:
    """k of ``mean_last_k``: the last five epochs, or all of them in a shorter run."""
    return max(1, min(5, int(epochs)))


# ---------------------------------------------------------------------------------------------
# one run

def _accuracies(metrics: pd.DataFrame, class_names: Sequence[str] | None, prefix: str = "") -> tuple:
    """(overall, balanced) per row from ``<prefix>test_acc`` and the ``<prefix>acc_<class>`` columns."""
    acc = pd.to_numeric(metrics[f"{prefix}test_acc"], errors="coerce")
    cols = [f"{prefix}acc_{n}" for n in (class_names or []) if f"{prefix}acc_{n}" in metrics.columns]
    balanced = metrics[cols].apply(pd.to_numeric, errors="coerce").mean(axis=1, skipna=True) if cols \
        else pd.Series(np.nan, index=metrics.index)
    return acc.to_numpy(), balanced.to_numpy()


def epoch_scores(metrics: pd.DataFrame, class_names: Sequence[str] | None) -> pd.DataFrame:
    """Per epoch: ``epoch``, ``acc`` (test accuracy) and ``balanced`` (mean of the per-class test
    accuracies ``acc_<class>``; NaN when the run logged none). A run with a curve split
    (``curve_test_samples``) also has ``final_acc`` and ``final_balanced``: the whole test split after its
    last epoch (NaN on the other epochs)."""
    acc, balanced = _accuracies(metrics, class_names)
    out = pd.DataFrame({"epoch": metrics["epoch"].to_numpy(), "acc": acc, "balanced": balanced})
    if "final_test_acc" in metrics.columns:
        out["final_acc"], out["final_balanced"] = _accuracies(metrics, class_names, prefix="final_")
    return out[out["acc"].notna()].reset_index(drop=True)


def selection_scores(per_epoch: pd.DataFrame) -> dict[str, float]:
    """``best_*``, ``last_*`` and ``mean_last_k_*`` for ``acc`` and ``balanced``, plus ``best_epoch``
    (the first epoch that reaches the highest accuracy, as the trainer keeps it) and ``k``. With a curve
    split, ``last_*`` is the whole test split after the last epoch; best and mean of the last k are on the
    curve split."""
    if per_epoch.empty:
        return {**{m: float("nan") for m in METRICS}, "best_epoch": float("nan"), "k": 0}
    i = int(np.argmax(per_epoch["acc"].to_numpy()))
    k = last_k(len(per_epoch))
    tail = per_epoch.iloc[-k:]
    out: dict[str, float] = {"best_epoch": float(per_epoch["epoch"].iloc[i]), "k": k}
    for score in SCORES:
        out[f"best_{score}"] = float(per_epoch[score].iloc[i])
        final = per_epoch[f"final_{score}"].iloc[-1] if f"final_{score}" in per_epoch.columns else float("nan")
        out[f"last_{score}"] = float(final if final == final else per_epoch[score].iloc[-1])
        out[f"mean_last_k_{score}"] = float(tail[score].mean())
    return out


def run_scores(run) -> dict[str, float]:
    """The protocol scores of one finished run (a ``runs.reader.Run``), read from its ``metrics.csv``."""
    return selection_scores(epoch_scores(run.metrics, run.class_names))


def run_card_text(run) -> str:
    """A run's own record as protocol lines (one seed: no interval): best (test-selected, with its epoch),
    last and mean of the last k epochs, overall and balanced."""
    s = run_scores(run)
    lines = [f"the run's record (metrics.csv, one seed; k = {s['k']}):"]
    for score, name in (("acc", "accuracy"), ("balanced", "balanced accuracy")):
        lines.append(f"  {name}: best epoch {int(s['best_epoch']) if s['best_epoch'] == s['best_epoch'] else '-'} "
                     f"(selected on the test set) {pct_interval(s[f'best_{score}'])} %, "
                     f"last epoch {pct_interval(s[f'last_{score}'])} %, "
                     f"mean of the last {s['k']} epochs {pct_interval(s[f'mean_last_k_{score}'])} %")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# groups of runs

def t_interval(values, level: float = LEVEL) -> tuple[float, float, float, float, int]:
    """(mean, std, low, high, n) of ``values`` (NaNs dropped): the ``level`` confidence interval of the
    mean by Student's t; std and the interval are NaN for fewer than two values."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(float(v))], dtype=float)
    n = len(x)
    if n == 0:
        return (float("nan"),) * 4 + (0,)
    mean = float(x.mean())
    if n < 2:
        return mean, float("nan"), float("nan"), float("nan"), n
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half, n


def protocol_card(per_run: pd.DataFrame, by: Sequence[str] | str = "method", baseline: Optional[str] = "baseline",
                  method_col: str = "method", seed_col: str = "seed",
                  order: Optional[Sequence] = None) -> pd.DataFrame:
    """One row per group of ``per_run`` (columns ``by``, ``seed`` and the ``METRICS``): ``runs``, ``seeds``,
    for each metric M its mean ``M``, ``M_std``, ``M_lo``, ``M_hi``; and, where the group's method is not
    ``baseline`` and a baseline group with the same other ``by`` values exists, the paired difference
    ``diff_M``, ``diff_M_lo``, ``diff_M_hi`` over the seeds both have (``pairs`` of them).

    ``order``: the index order (values of a single ``by`` column); groups keep first-seen order otherwise.
    """
    by = [by] if isinstance(by, str) else list(by)
    groups = list(per_run.groupby(by, sort=False, dropna=False))
    rows = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        row: dict = dict(zip(by, key))
        row["runs"] = len(g)
        row["seeds"] = ",".join(str(int(s)) for s in sorted(g[seed_col].unique()))
        for m in METRICS:
            mean, std, lo, hi, _ = t_interval(g[m] if m in g else [])
            row.update({m: mean, f"{m}_std": std, f"{m}_lo": lo, f"{m}_hi": hi})
        row.update(_paired_to_baseline(per_run, row, by, baseline, method_col, seed_col))
        rows.append(row)
    card = pd.DataFrame(rows)
    if len(by) == 1:
        card = card.set_index(by[0])
        if order is not None:
            card = card.reindex([o for o in order if o in card.index])
    return card


def _paired_to_baseline(per_run, row, by, baseline, method_col, seed_col) -> dict:
    out = {"pairs": 0}
    out.update({f"diff_{m}{s}": float("nan") for m in METRICS for s in ("", "_lo", "_hi")})
    if baseline is None or method_col not in by or row[method_col] == baseline:
        return out
    others = [c for c in by if c != method_col]
    mine = per_run[(per_run[method_col] == row[method_col])]
    base = per_run[(per_run[method_col] == baseline)]
    for c in others:
        mine, base = mine[mine[c] == row[c]], base[base[c] == row[c]]
    paired = mine.merge(base, on=seed_col, suffixes=("", "_base"))
    out["pairs"] = len(paired)
    for m in METRICS:
        if m not in paired:
            continue
        mean, _, lo, hi, _ = t_interval(paired[m] - paired[f"{m}_base"])
        out.update({f"diff_{m}": mean, f"diff_{m}_lo": lo, f"diff_{m}_hi": hi})
    return out


# ---------------------------------------------------------------------------------------------
# text

def pct_interval(mean: float, std: float = float("nan"), lo: float = float("nan"), hi: float = float("nan"),
                 signed: bool = False) -> str:
    """``69.56 ± 0.33 [68.74, 70.38]`` in percent; only the mean for one seed; blank for NaN."""
    if mean is None or math.isnan(mean):
        return ""
    fmt = "{:+.2f}" if signed else "{:.2f}"
    text = fmt.format(100 * mean)
    if std is not None and not math.isnan(std):
        text += f" ± {100 * std:.2f}"
    if lo is not None and not math.isnan(lo):
        text += f" [{fmt.format(100 * lo)}, {fmt.format(100 * hi)}]"
    return text


def metric_text(card: pd.DataFrame, metric: str) -> list[str]:
    """Each row's ``metric`` as ``mean ± std [95 % CI]`` in percent."""
    return [pct_interval(r[metric], r[f"{metric}_std"], r[f"{metric}_lo"], r[f"{metric}_hi"])
            for _, r in card.iterrows()]


def card_text(card: pd.DataFrame, metrics: Sequence[str] = METRICS, diffs: Sequence[str] = ("best_acc", "last_acc",
              "mean_last_k_acc"), keys: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """The card as text columns: the ``keys`` columns (default: the text columns that name a group, then
    ``runs`` and ``seeds``), each metric as ``mean ± std [95 % CI]`` in percent and each paired difference as
    ``+1.22 [-0.69, +3.14]``; column names say how the epoch was selected."""
    out = pd.DataFrame(index=card.index)
    if keys is None:
        keys = [c for c in card.columns if card[c].dtype == object and c not in SELECTIONS
                and not c.startswith("paper") and c != "seeds"]
    for c in [*keys, "runs", "seeds"]:
        out[c] = card[c]
    for m in metrics:
        out[column_title(m)] = metric_text(card, m)
    for m in diffs:
        if f"diff_{m}" in card and card[f"diff_{m}"].notna().any():
            out[f"Δ vs baseline, {column_title(m)}"] = [
                pct_interval(r[f"diff_{m}"], lo=r[f"diff_{m}_lo"], hi=r[f"diff_{m}_hi"], signed=True)
                for _, r in card.iterrows()]
    return out


def column_title(metric: str) -> str:
    """``best_acc`` -> ``best (test-selected)``, ``mean_last_k_balanced`` -> ``balanced, mean last k``."""
    sel, score = next((s, metric[len(s) + 1:]) for s in sorted(SELECTIONS, key=len, reverse=True)
                      if metric.startswith(s + "_"))
    name = {"best": "best (test-selected)", "last": "last", "mean_last_k": "mean last k"}[sel]
    return name if score == "acc" else f"balanced, {name}"


def card_legend(card: pd.DataFrame, epochs: Optional[int] = None) -> str:
    """The protocol in one paragraph, to print above every table."""
    seeds = sorted({s for v in card.get("seeds", pd.Series(dtype=str)) for s in str(v).split(",") if s})
    k = f"k = {last_k(epochs)}" if epochs else "k = min(5, epochs)"
    return (f"Protocol: test accuracy in %, mean ± std over {len(seeds)} seed(s) ({', '.join(seeds)}) with the "
            f"95 % confidence interval of the mean in brackets (Student's t). 'best (test-selected)' is the "
            f"epoch with the highest test accuracy, selected on the test set as the paper does (optimistic); "
            f"'last' is the final epoch; 'mean last k' is the mean over the last epochs ({k}). 'balanced' is "
            f"the mean per-class accuracy at the same epochs. 'Δ vs baseline' is the paired difference to the "
            f"baseline over the same seeds, with its 95 % interval: an interval that contains 0 does not "
            f"separate the method from the baseline.{split_note(card)}")


def split_note(card: pd.DataFrame) -> str:
    """What the test accuracies were measured on, when the runs recorded it (``experiments.summarise``)."""
    whole, curve = card.attrs.get("test_images"), card.attrs.get("curve_images")
    if not whole:
        return ""
    if not curve:
        return f" Every epoch is evaluated on the whole test split ({whole:,} images)."
    return (f" 'last' is measured on the whole test split ({whole:,} images) after the final epoch; the per-epoch "
            f"curve, 'best' and 'mean last k' on a stratified part of it ({curve:,} images, curve_test_samples).")


def half_width(card: pd.DataFrame, metric: str = "last_acc") -> float:
    """The largest half-width (in accuracy units) of the paired-difference intervals of ``metric``."""
    lo, hi = card.get(f"diff_{metric}_lo"), card.get(f"diff_{metric}_hi")
    if lo is None or lo.isna().all():
        return float("nan")
    return float(((hi - lo) / 2).max())


def verdicts(card: pd.DataFrame, metric: str = "last_acc") -> Mapping[str, str]:
    """Per group: whether its paired interval to the baseline lies above 0, below 0 or contains 0."""
    out = {}
    for name, r in card.iterrows():
        lo, hi = r.get(f"diff_{metric}_lo"), r.get(f"diff_{metric}_hi")
        if lo is None or math.isnan(lo):
            continue
        out[name] = "above the baseline" if lo > 0 else "below the baseline" if hi < 0 else \
            "not separated from the baseline"
    return out
