"""protocol.py: the selections, intervals and paired differences of the protocol card, on hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from adadf_core.studies import protocol


def per_epoch(acc, balanced=None):
    return pd.DataFrame({"epoch": range(1, len(acc) + 1), "acc": acc,
                         "balanced": balanced if balanced is not None else [np.nan] * len(acc)})


def test_selections_best_last_and_mean_of_last_five():
    s = protocol.selection_scores(per_epoch([0.50, 0.70, 0.60, 0.65, 0.62, 0.64, 0.60],
                                            [0.40, 0.66, 0.50, 0.60, 0.55, 0.61, 0.52]))
    assert s["best_epoch"] == 2 and s["best_acc"] == pytest.approx(0.70)
    assert s["best_balanced"] == pytest.approx(0.66)          # the balanced accuracy *at* the best epoch
    assert s["last_acc"] == pytest.approx(0.60) and s["last_balanced"] == pytest.approx(0.52)
    assert s["k"] == 5
    assert s["mean_last_k_acc"] == pytest.approx((0.60 + 0.65 + 0.62 + 0.64 + 0.60) / 5)
    assert s["mean_last_k_balanced"] == pytest.approx((0.50 + 0.60 + 0.55 + 0.61 + 0.52) / 5)


def test_short_runs_average_every_epoch_and_ties_keep_the_first_best():
    s = protocol.selection_scores(per_epoch([0.6, 0.8, 0.8]))
    assert s["k"] == 3 and s["mean_last_k_acc"] == pytest.approx(2.2 / 3)
    assert s["best_epoch"] == 2                      # the trainer keeps the first epoch reaching the maximum
    assert math.isnan(s["best_balanced"])


def test_balanced_accuracy_is_the_mean_of_the_logged_per_class_accuracies():
    m = pd.DataFrame({"epoch": [1, 2], "test_acc": [0.5, 0.6], "acc_a": [0.2, 0.9], "acc_b": [0.4, np.nan],
                      "acc_other_metric": [9.0, 9.0]})
    e = protocol.epoch_scores(m, ["a", "b"])
    assert e["balanced"].tolist() == pytest.approx([0.3, 0.9])     # a class without test samples is skipped


def test_t_interval_by_hand():
    mean, std, lo, hi, n = protocol.t_interval([1.0, 2.0, 3.0])
    half = 4.302652729749464 / math.sqrt(3)                          # t(0.975, 2) * 1 / sqrt(3)
    assert (mean, std, n) == (2.0, 1.0, 3)
    assert lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    one = protocol.t_interval([0.7, float("nan")])
    assert one[0] == 0.7 and one[4] == 1 and all(math.isnan(v) for v in one[1:4])


def runs_frame(rows):
    df = pd.DataFrame(rows, columns=["method", "noise", "seed", "acc"])
    for m in protocol.METRICS:
        df[m] = df["acc"] if m.endswith("_acc") else np.nan
    return df


def test_paired_difference_uses_only_the_seeds_both_have():
    df = runs_frame([("baseline", 0, 0, 0.50), ("baseline", 0, 1, 0.60),
                     ("adadf", 0, 0, 0.60), ("adadf", 0, 1, 0.90), ("adadf", 0, 2, 0.10)])
    card = protocol.protocol_card(df, by="method", order=["baseline", "adadf"])
    assert list(card.index) == ["baseline", "adadf"]
    a = card.loc["adadf"]
    assert a["runs"] == 3 and a["seeds"] == "0,1,2" and a["pairs"] == 2
    assert a["last_acc"] == pytest.approx(0.5333333)               # all three seeds in its own mean
    diffs = [0.10, 0.30]                                            # seed 2 has no baseline: not paired
    half = 12.706204736174707 * np.std(diffs, ddof=1) / math.sqrt(2)
    assert a["diff_last_acc"] == pytest.approx(0.20)
    assert a["diff_last_acc_lo"] == pytest.approx(0.20 - half) and a["diff_last_acc_hi"] == pytest.approx(0.20 + half)
    assert math.isnan(card.loc["baseline", "diff_last_acc"]) and card.loc["baseline", "pairs"] == 0


def test_paired_difference_stays_within_the_same_noise_rate():
    df = runs_frame([("baseline", 0.0, 0, 0.70), ("baseline", 0.0, 1, 0.72), ("baseline", 0.2, 0, 0.50),
                     ("baseline", 0.2, 1, 0.54), ("adadf", 0.2, 0, 0.60), ("adadf", 0.2, 1, 0.62)])
    card = protocol.protocol_card(df, by=["method", "noise"])
    row = card[(card["method"] == "adadf") & (card["noise"] == 0.2)].iloc[0]
    assert row["diff_best_acc"] == pytest.approx(0.09)              # (0.10 + 0.08) / 2, not against 0 % noise


def test_text_verdicts_and_half_width():
    df = runs_frame([("baseline", 0, s, a) for s, a in enumerate([0.50, 0.51, 0.52])] +
                    [("adadf", 0, s, a) for s, a in enumerate([0.60, 0.62, 0.61])] +
                    [("ld_only", 0, s, a) for s, a in enumerate([0.45, 0.58, 0.50])])
    card = protocol.protocol_card(df, by="method")
    v = protocol.verdicts(card)
    assert v == {"adadf": "above the baseline", "ld_only": "not separated from the baseline"}
    assert protocol.half_width(card) == pytest.approx(
        (card.loc["ld_only", "diff_last_acc_hi"] - card.loc["ld_only", "diff_last_acc_lo"]) / 2)
    text = protocol.card_text(card)
    assert text.loc["adadf", "best (test-selected)"].startswith("61.00 ± 1.00 [")
    assert text.loc["adadf", "Δ vs baseline, last"].startswith("+10.00 [+")
    assert protocol.pct_interval(0.5) == "50.00" and protocol.pct_interval(float("nan")) == ""
    assert "3 seed(s)" in protocol.card_legend(card, epochs=4) and "k = 4" in protocol.card_legend(card, epochs=4)
