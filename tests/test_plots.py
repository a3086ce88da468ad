"""plots.py against fake run folders written per the run folder contract (docs/ARCHITECTURE.md)."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from adadf_core import plots  # noqa: E402
from adadf_core.config import make_config  # noqa: E402
from adadf_core.runs.reader import Run  # noqa: E402
from adadf_core.studies import analysis  # noqa: E402

NAMES = ["Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral"]
C, E, K = 7, 4, 3


def threshold_row(c: int, t: float = 0.7, off: float = 0.4 / 6) -> np.ndarray:
    row = np.full(C, off)
    row[c] = t
    return row


def make_fake_run(path, method="adadf", epochs=E, with_gt=True, seed=0):
    """A finished run folder with every file the contract lists, filled with plausible values."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    cfg = make_config("synthfer", method=method, epochs=epochs, seed=seed, run_dir=str(path))
    (path / "config.json").write_text(json.dumps({"config": json.loads(cfg.to_json()),
                                                  "environment": {"class_names": NAMES}}))
    test_acc = np.array([0.40, 0.62, 0.58, 0.55])[:epochs]
    rows = []
    for e in range(1, epochs + 1):
        rows.append(dict(epoch=e, lr=1e-3 * 0.9 ** (e - 1), w_ce=1.0 if e <= 3 else 0.94,
                         w_kl=np.exp(-(1 - min(e, 3) / 3) ** 2), loss=2.0 / e, loss_ce=1.5 / e, loss_kl=0.4 / e,
                         loss_rr=0.01, train_acc=0.3 + 0.1 * e, test_acc=test_acc[e - 1], seconds=1.0,
                         kl_gt_label=0.9 / e, kl_gt_class=0.5, kl_gt_fused=0.4 / e,
                         js_gt_label=0.2 / e, js_gt_class=0.15, js_gt_fused=0.1 / e))
    pd.DataFrame(rows).to_csv(path / "metrics.csv", index=False)
    D = np.stack([np.stack([threshold_row(c) for c in range(C)])] * (epochs + 1))
    for e in range(1, epochs + 1):
        for c in range(C):
            if c != 1:  # class 1 (Fear) stays in fallback: diagonal below t
                row = rng.dirichlet(np.ones(C)) * 0.2
                row[c] = 0.0
                row = row / row.sum() * 0.2
                row[c] = 0.8
                D[e, c] = row
    np.save(path / "class_distributions.npy", D.astype(np.float32))
    def dists(shape):
        x = rng.random(shape) + 0.05
        return (x / x.sum(-1, keepdims=True)).astype(np.float32)
    tracked = dict(indices=np.array([5, 17, 42]), labels=np.array([0, 3, 6]),
                   label_dist=dists((epochs, K, C)), class_dist=dists((epochs, K, C)), fused=dists((epochs, K, C)),
                   attention_raw=rng.random((epochs, K)).astype(np.float32),
                   attention_weight=np.tile(np.array([0.9, 0.2, 0.5], np.float32), (epochs, 1)))
    if with_gt:
        gt = np.zeros((K, C), np.float32)
        gt[0, 0] = 1.0                        # clear: all votes on one class
        gt[1] = 1.0 / C                       # ambiguous: uniform votes
        gt[2, [5, 6]] = 0.5
        tracked["gt"] = gt
    np.savez(path / "tracked.npz", **tracked)
    conf = rng.integers(0, 20, (C, C)) + np.diag(np.full(C, 50))
    np.save(path / "confusion.npy", conf)
    np.save(path / "confusion_best.npy", conf)
    labels = np.repeat(np.arange(C), 12)
    centers = rng.normal(0, 8, (C, 16))
    feats = centers[labels] + rng.normal(0, 1, (len(labels), 16))
    np.savez(path / "features.npz", features=feats.astype(np.float32), labels=labels, preds=labels)
    summary = dict(finished=True, best_acc=float(test_acc.max()), best_epoch=int(test_acc.argmax() + 1),
                   last_acc=float(test_acc[-1]), last_epoch=epochs, per_class_acc_last=list(np.linspace(.3, .9, C)),
                   per_class_acc_best=list(np.linspace(.35, .95, C)), class_names=NAMES, method=method,
                   dataset="synthfer", seconds=4.0)
    (path / "summary.json").write_text(json.dumps(summary))
    return Run(path)


@pytest.fixture()
def run(tmp_path):
    return make_fake_run(tmp_path / "adadf-seed0")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_save_figure_writes_png(tmp_path, run):
    fig = plots.learning_curves(run)
    path = plots.save_figure(fig, tmp_path / "out", "02_learning_curves")
    assert path == tmp_path / "out" / "figures" / "02_learning_curves.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        plots.save_figure(fig, tmp_path, "bad name/with slash")


def test_learning_curves_mark_best_and_last(run):
    fig = plots.learning_curves(run)
    assert len(fig.axes) == 4
    acc_ax = fig.axes[0]
    labels = [t.get_text() for t in acc_ax.get_legend().get_texts()]
    assert any(lbl.startswith("best (epoch 2)") for lbl in labels), labels
    assert any(lbl.startswith("last (epoch 4)") for lbl in labels), labels
    test_line = [ln for ln in acc_ax.get_lines() if ln.get_label() == "test"][0]
    np.testing.assert_allclose(test_line.get_ydata(), run.metrics["test_acc"])
    ramp_labels = {ln.get_label() for ln in fig.axes[2].get_lines()}
    assert ramp_labels == {"w_CE", "w_KL"}                           # the paper's names, not column names
    loss_labels = {ln.get_label() for ln in fig.axes[1].get_lines()}
    assert {"L_CE (auxiliary branch)", "L_KL (target branch)"} <= loss_labels


def test_learning_curves_reject_empty_metrics():
    with pytest.raises(ValueError, match="no finished epoch"):
        plots.learning_curves(pd.DataFrame())


def test_confusion_matrix_rows_normalised(run):
    fig = plots.confusion_matrix(run.confusion, run.class_names)
    values = np.asarray(fig.axes[0].collections[0].get_array()).reshape(C, C)
    np.testing.assert_allclose(values.sum(1), 1.0, atol=1e-9)
    conf = run.confusion
    np.testing.assert_allclose(values, conf / conf.sum(1, keepdims=True))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == NAMES


def test_per_class_accuracy_bars(run):
    fig = plots.per_class_accuracy(run)
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(heights[:C], run.summary["per_class_acc_last"])


def test_class_distribution_heatmap_equals_D_and_marks_fallback(run):
    D = run.class_distributions[-1]
    fig = plots.class_distribution_heatmap(D, run.class_names, threshold=0.7)
    values = np.asarray(fig.axes[0].collections[0].get_array()).reshape(C, C)
    np.testing.assert_allclose(values, D, rtol=1e-6)
    ylabels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ylabels[1] == "Fear (fallback)"
    assert sum("fallback" in y for y in ylabels) == 1
    assert fig.fallback.tolist() == [False, True, False, False, False, False, False]


def test_fallback_rows_detection():
    D = np.stack([threshold_row(c) for c in range(C)])
    assert analysis.fallback_rows(D, 0.7).all()
    assert not analysis.fallback_rows(D, 0.5).any()          # diagonal must equal t
    D[2] = np.eye(C)[2] * 0.6 + 0.4 / 6 * (1 - np.eye(C)[2])
    D[2, 3] += 0.01                                        # off-diagonal not flat: mined row
    assert analysis.fallback_rows(D, None).tolist() == [True, True, False, True, True, True, True]


def test_class_distribution_evolution(run):
    D = run.class_distributions
    fig = plots.class_distribution_evolution(D, run.class_names, threshold=0.7)
    curve_ax = fig.axes[-1]
    lines = {ln.get_label(): ln for ln in curve_ax.get_lines()}
    np.testing.assert_allclose(lines["Happiness"].get_ydata(), D[:, 3, 3], rtol=1e-6)
    np.testing.assert_allclose(lines["Fear"].get_ydata(), np.full(E + 1, 0.7), rtol=1e-6)
    assert len(fig.axes) >= 4  # small multiples plus the curve panel


def test_pick_tracked_samples_by_gt_entropy_and_by_attention(tmp_path, run):
    assert analysis.pick_tracked_samples(run.tracked) == [1, 0]   # ambiguous (uniform votes), clear (one class)
    nogt = make_fake_run(tmp_path / "nogt", with_gt=False).tracked
    assert analysis.pick_tracked_samples(nogt) == [1, 0]          # lowest, highest attention weight


def test_fusion_sample_bars(run):
    t = run.tracked
    fig = plots.fusion_sample(t, 1, class_names=NAMES)
    ax = fig.axes[0]
    heights = np.array([p.get_height() for p in ax.patches]).reshape(4, C)
    np.testing.assert_allclose(heights[0], t["label_dist"][-1, 1], rtol=1e-6)
    np.testing.assert_allclose(heights[1], t["class_dist"][-1, 1], rtol=1e-6)
    np.testing.assert_allclose(heights[2], t["fused"][-1, 1], rtol=1e-6)
    np.testing.assert_allclose(heights[3], t["gt"][1], rtol=1e-6)
    assert "w = 0.200" in ax.get_title() and "sample 17" in ax.get_title()


def test_fusion_over_epochs_heatmaps(run):
    t = run.tracked
    fig = plots.fusion_over_epochs(t, 2, class_names=NAMES)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), t["label_dist"][:, 2], rtol=1e-6)
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), t["fused"][:, 2], rtol=1e-6)


def test_divergence_curves(run):
    fig = plots.divergence_curves(run)
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert labels == ["d (label distribution)", "D[y] (class distribution)", "f (fused target)"]
    assert "lower is closer" in fig.axes[0].get_title() and f"seed {run.config.seed}" in fig._suptitle.get_text()
    assert all(float(t).is_integer() for t in fig.axes[0].get_xticks())          # whole epochs only
    with pytest.raises(ValueError, match="SynthFER"):
        plots.divergence_curves(run.metrics[["epoch", "test_acc"]])


def test_separability_separated_beats_random():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    centers = rng.normal(0, 10, (4, 8))
    separated = centers[labels] + rng.normal(0, 1, (120, 8))
    noise = rng.normal(0, 1, (120, 8))
    good, bad = analysis.separability(separated, labels), analysis.separability(noise, labels)
    assert good["knn_acc"] > 0.95 and bad["knn_acc"] < 0.5
    assert good["silhouette"] > bad["silhouette"] + 0.3


def test_separability_leaves_out_a_class_with_one_face():
    rng = np.random.default_rng(0)
    labels = np.r_[np.repeat(np.arange(3), 20), 3]               # class 3: a single face
    features = rng.normal(0, 10, (4, 8))[labels] + rng.normal(0, 1, (61, 8))
    assert analysis.separability(features, labels)["knn_acc"] > 0.95
    assert np.isnan(analysis.separability(features[[0, 1, 60]], labels[[0, 1, 60]])["knn_acc"])   # one class left


def test_tsne_comparison_panels_and_scores(tmp_path, run):
    other = make_fake_run(tmp_path / "baseline-seed0", method="baseline", seed=1)
    fig = plots.tsne_comparison({"baseline": other.features, "Ada-DF": run.features}, class_names=NAMES)
    assert [ax.get_title() for ax in fig.axes] == ["baseline", "Ada-DF"]
    assert set(fig.separability) == {"baseline", "Ada-DF"}
    assert "silhouette" in fig.axes[0].get_xlabel()
    n_points = sum(len(c.get_offsets()) for c in fig.axes[1].collections)
    assert n_points == len(run.features["labels"])


def _card(values, seeds=3, **cols):
    """A protocol card by hand: each metric's mean with a symmetric interval of 0.02."""
    t = pd.DataFrame(cols)
    for m, v in values.items():
        t[m], t[f"{m}_lo"], t[f"{m}_hi"] = v, np.asarray(v) - 0.02, np.asarray(v) + 0.02
    t["runs"] = seeds
    return t


def test_ablation_figure_keeps_the_papers_numbers_off_our_axis_and_draws_intervals():
    acc = {"best_acc": [.6, .62, .63, .65], "last_acc": [.55, .6, .6, .62], "mean_last_k_acc": [.55, .58, .6, .61],
           "diff_best_acc": [np.nan, .02, .03, .05], "diff_last_acc": [np.nan, .05, .05, .07],
           "diff_mean_last_k_acc": [np.nan, .03, .05, .06]}
    ablation = _card(acc, paper_best_acc=[.8871, .8928, .8950, .9004], paper_source="RAF-DB, ResNet-18 (MS-Celeb-1M)")
    ablation.index = pd.Index(["baseline", "cd_only", "ld_only", "adadf"], name="variant")
    ablation.attrs["runs"] = [dict(method=m, seed=s, last_acc=a + 0.01 * s) for m, a in zip(ablation.index, acc["last_acc"])
                              for s in range(3)]
    fig = plots.ablation_bars(ablation)
    ours, diff, paper = fig.axes
    assert [t.get_text() for t in ours.get_xticklabels()] == list(ablation.index)
    assert not ours.patches and not paper.patches                     # dots and intervals, no bars on a cut axis
    assert ours.get_ylim()[1] < 0.8 < paper.get_ylim()[1]            # RAF-DB's 88-90 % never squash our points
    means = [c for c in ours.containers if c.has_yerr]
    assert len(means) == 3                                           # best, last, mean last k: each with its CI
    np.testing.assert_allclose(means[1].lines[0].get_ydata(), acc["last_acc"])
    dots = [c for c in ours.collections if c.get_label() == "each seed (last)"][0]
    assert len(dots.get_offsets()) == 12                             # every seed of every variant
    assert "ResNet-18" in paper.get_title()                          # the shared backbone, named once
    assert "Δ vs baseline" in diff.get_title()
    unstated = ablation.assign(paper_backbone=["ResNet-18", "ResNet-18", "backbone not stated in sources", "ResNet-18"])
    paper = plots.ablation_bars(unstated).axes[2]
    assert sum("backbone not stated" in t.get_text() for t in paper.texts) == 1


def test_sensitivity_and_noise_figures():
    sens = pd.DataFrame({"param": ["lambda_min"] * 2 + ["threshold"] * 2, "value": [0.0, 0.2, 0.6, 0.7],
                         "best_acc": [.5, .6, .55, .6], "last_acc": [.5, .55, .5, .55],
                         "is_base": [False, True, False, True]})
    fig = plots.sensitivity_lines(sens)
    assert [ax.get_title() for ax in fig.axes] == ["lambda_min", "threshold"]
    noise = _card({"best_acc": [.6, .5, .62, .58, .57], "last_acc": [.58, .45, .6, .55, .5]},
                  method=["baseline", "baseline", "adadf", "adadf", "adadf"], noise=["0", "0.2", "0", "0.2", "noise01"],
                  paper_acc=[np.nan, np.nan, np.nan, .8667, np.nan], paper_source="RAF-DB, ResNet-18")
    noise.attrs["runs"] = [dict(method="adadf", noise="0.2", seed=s, last_acc=a, best_acc=a)
                           for s, a in enumerate((0.7, 0.68, 0.27))]        # one collapsed seed
    fig = plots.noise_plot(noise)
    ours, paper = fig.axes
    lines = {ln.get_label(): ln for ln in ours.get_lines()}
    np.testing.assert_allclose(lines["adadf: best (test-selected)"].get_ydata(), [.62, .58])
    dots = [c for c in ours.collections if c.get_label() == "adadf: each seed (last)"][0]
    assert sorted(np.round(dots.get_offsets()[:, 1], 2)) == [0.27, 0.68, 0.7]     # the collapsed seed is a dot
    bars = [c for c in ours.containers if c.has_yerr]
    assert len(bars) == 2                                             # last epoch: mean with its 95 % interval
    assert [t.get_text() for t in ours.get_xticklabels()] == ["0%", "20%"]
    assert any("noise01" in t.get_text() for t in ours.texts)
    paper_lines = {ln.get_label(): ln for ln in paper.get_lines()}
    assert paper_lines["adadf"].get_ydata()[-1] == pytest.approx(.8667)
    assert paper_lines["baseline"].get_ydata()[0] == pytest.approx(.8871)          # Table 2's clean baseline
    assert max(ours.get_ylim()) < 0.8


# ----------------------------------------------------------------------- alignment (notebook 01)
def test_alignment_template_figure_marks_the_template_points(tmp_path):
    from adadf_core.data import align

    fig = plots.plot_template((96, 112), path=tmp_path / "figs" / "template.png")
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.collections[0].get_offsets(), align.reference_template((96, 112)))
    assert ax.get_title() == "template, 96x112" and [t.get_text().split("\n")[0] for t in ax.texts] == list(
        align.LANDMARK_NAMES)
    assert (tmp_path / "figs" / "template.png").stat().st_size > 1000
    plt.close(fig)


def test_manifest_examples_put_each_source_above_its_aligned_output(tmp_path):
    from PIL import Image

    from adadf_core.data import align

    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((60, 80, 3), 90, np.uint8)).save(tmp_path / "src" / name)
    Image.fromarray(np.full((64, 48, 3), 200, np.uint8)).save(tmp_path / "dst" / "b.png")
    points = align.reference_template(100) * 0.6
    rows = []
    for name in ("a.png", "b.png"):              # a.png's output is missing: shown as 'no face'
        row = {c: np.nan for c in align.MANIFEST_COLUMNS}
        row.update(source=name, status="aligned", output=name)
        for label, (x, y) in zip(align.LANDMARK_NAMES, points):
            row[f"{label}_x"], row[f"{label}_y"] = x, y
        rows.append(row)
    rows.append({**rows[1], "source": "c.png", "status": "no_face"})    # filtered out by status
    fig = plots.plot_manifest_examples(tmp_path / "src", tmp_path / "dst", pd.DataFrame(rows),
                                       path=tmp_path / "grid.png")
    axes = np.array(fig.axes).reshape(2, 2)
    assert [ax.get_title() for ax in axes[0]] == ["a.png", "b.png"]
    np.testing.assert_allclose(axes[0, 1].collections[0].get_offsets(), points)
    assert any(t.get_text() == "no face" for t in axes[1, 0].texts)
    assert axes[1, 1].images[0].get_array().shape == (64, 48, 3)
    assert (tmp_path / "grid.png").exists()
    plt.close(fig)
    with pytest.raises(ValueError, match="no rows with status"):
        plots.plot_manifest_examples(tmp_path / "src", tmp_path / "dst", pd.DataFrame(rows), statuses=("error",))
