"""groundtruth.py: the SynthFER-only analysis of notebook 06 (hand-made tables; one tiny real run)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from adadf_core.studies import groundtruth as G


def table(js_d, js_D, js_f, entropy, attention, flipped=None):
    n = len(js_d)
    return pd.DataFrame({"js_d": js_d, "js_D[y]": js_D, "js_f": js_f, "entropy": entropy,
                         "attention": attention, "weight": attention, "label": [0] * n, "clean_label": [0] * n,
                         "flipped": flipped if flipped is not None else [False] * n})


def test_tertiles_split_by_vote_entropy():
    assert list(G.tertile(np.array([0.9, 0.1, 0.5, 0.2, 0.8, 0.4]))) == \
        ["ambiguous", "clear", "middle", "clear", "ambiguous", "middle"]


def test_divergence_summary_means_over_seeds_and_paired_differences():
    t0 = table([.2, .2, .2], [.1, .1, .1], [.15, .15, .15], [0.1, 0.5, 0.9], [1, 2, 3])
    t1 = table([.4, .4, .4], [.1, .1, .1], [.25, .25, .25], [0.1, 0.5, 0.9], [1, 2, 3])
    s = G.divergence_summary({0: t0, 1: t1}).set_index(["group", "target"])
    assert s.loc[("all faces", "d"), "mean"] == pytest.approx(0.3)
    assert s.loc[("all faces", "f − d"), "mean"] == pytest.approx(-0.1)       # (-0.05 + -0.15) / 2
    half = 12.706204736174707 * np.std([-0.05, -0.15], ddof=1) / math.sqrt(2)
    assert s.loc[("all faces", "f − d"), "ci_hi"] == pytest.approx(-0.1 + half)
    assert s.loc[("all faces", "f − D[y]"), "mean"] == pytest.approx(0.1)
    assert ("flipped labels", "d") not in s.index                            # no noise: no flipped group
    assert s.loc[("ambiguous third (vote entropy)", "d"), "seeds"] == 2


def test_attention_summary_and_claims_verdicts():
    ent = np.linspace(0, 1, 30)
    seeds = {s: table(*[np.full(30, .1)] * 3, ent, 1 - ent + 0.01 * s,
                      flipped=np.arange(30) % 5 == 0) for s in range(3)}
    for s, t in seeds.items():
        t.loc[t["flipped"], "attention"] -= 0.2 + 0.01 * s                    # flipped faces get less attention
    summary = G.attention_summary(seeds)
    att = summary.set_index("quantity")
    assert att.loc["Spearman(ā, vote entropy)", "mean"] < -0.9
    assert att.loc["ā flipped − clean", "ci_hi"] < 0
    div = G.divergence_summary(seeds)
    c = G.claims(div, summary).set_index("claim")["verdict"]
    assert c["the attention weight is lower for faces whose label was flipped"] == "holds"
    assert c["the attention weight is lower for more ambiguous faces (negative rank correlation)"] == "holds"
    # f == d == D[y] exactly: the interval is a point at 0, which does not show the claim
    assert c["the fused target f is closer to the true label distribution than the label distribution d"] \
        .startswith("not resolved at this power")


def test_sample_table_of_a_tiny_adadf_run(tiny_synthfer, tmp_path):
    """On a real (tiny) run: one row per training face, divergences within [0, ln 2], the fused target
    between d and D[y] in divergence terms is not checked (JS is not linear), but f is recomputed exactly."""

    from adadf_core.pipeline.budgets import QUICK_RUN
    from adadf_core.config import make_config
    from adadf_core.engine.train import fit

    cfg = make_config("synthfer", data_root=str(tiny_synthfer), run_dir=str(tmp_path / "run"), device="cpu",
                      progress=False, noise_rate=0.25, **QUICK_RUN)
    run = fit(cfg)
    t = G.sample_table(run)
    assert len(t) == len(run.metrics) * 0 + run.environment["num_train"]
    assert t[["js_d", "js_D[y]", "js_f"]].to_numpy().min() >= 0
    assert t[["js_d", "js_D[y]", "js_f"]].to_numpy().max() <= math.log(2) + 1e-6
    assert t["flipped"].sum() == round(0.25 * len(t))
    assert t["weight"].min() == pytest.approx(cfg.lambda_min) and t["weight"].max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="has no label/class distributions"):
        G.sample_table(fit(make_config("synthfer", method="baseline", data_root=str(tiny_synthfer),
                                       run_dir=str(tmp_path / "base"), device="cpu", progress=False, **QUICK_RUN)))
