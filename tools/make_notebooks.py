"""Writes notebooks/02..07 clean (no outputs) with nbformat."""
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/main") / "notebooks"

COMMON = '''dataset = "synthfer"          # synthfer | raf | affectnet7 | affectnet8 | sfew | imagefolder
data_root = None              # data set root; None: the generated SynthFER copy
output_dir = "results/synthfer"  # figures/ and tables/ go here (relative paths: from the repository root)
runs_dir = None               # training runs; None: <output_dir>/runs
epochs = None                 # None: the data set's preset epochs
seeds = [0]                   # more than one seed: tables show mean ± std
device = "auto"               # auto | cpu | cuda | cuda:N
profile = "official"          # official (the authors' code) | paper (the text)
quick = False                 # tiny runs (tests and smoke checks)
reuse_runs = True             # reuse finished run folders instead of training again
pretrained = None             # path to backbone weights (e.g. resnet18_msceleb.pth); None: from scratch
train_overrides = {}          # any other TrainConfig field, e.g. {"image_size": 224, "recipe": "official"}'''

SETUP = '''%matplotlib inline
import pandas as pd
from tqdm.auto import tqdm
from adadf_core import plots, studies

ctx = studies.notebook_setup(dataset=dataset, data_root=data_root, output_dir=output_dir, runs_dir=runs_dir,
                             epochs=epochs, seeds=seeds, device=device, profile=profile, quick=quick,
                             reuse_runs=reuse_runs, pretrained=pretrained, **train_overrides)
print("results:", ctx.output_dir)
print("runs:   ", ctx.runs_root)'''


def params_cell(extra: str = "") -> nbformat.NotebookNode:
    cell = new_code_cell(COMMON + ("\n" + extra if extra else ""))
    cell.metadata["tags"] = ["parameters"]
    return cell


def md(text):
    return new_markdown_cell(text.strip())


def code(text):
    return new_code_cell(text.strip())


def write(name, cells):
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (adadf)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    nbformat.write(nb, str(ROOT / name))
    print("wrote", ROOT / name)


# ------------------------------------------------------------------------------------------------ 02
write("02_training.ipynb", [
    md("""
# 02 · Training Ada-DF

Ada-DF trains two ResNet-18 branches on a shared frozen stem. The **auxiliary branch** learns the hard
labels with cross-entropy and produces each sample's *label distribution* d. Once per epoch the mean
auxiliary prediction of every class is mined into a *class distribution* D (a row per class; classes whose
mean prediction stays below the threshold t fall back to a fixed distribution). The **target branch** learns,
by KL divergence, from the fusion f = (1 − w)·d + w·D[y], where w is the sample's normalised attention
weight. Two ramps move the weight from cross-entropy to KL over the first ê epochs (spec §2–§4).

This notebook trains one Ada-DF run (or reuses a finished one) and shows what it learned. The paper reports
the **best test accuracy over all epochs**; we report it, labelled, next to the **last-epoch** accuracy (§7).
"""),
    md("## Parameters\n\nPapermill replaces this cell's values (`adadf reproduce -p NAME VALUE`)."),
    params_cell(),
    code(SETUP),
    md("""
## The data

On SynthFER (the embedded synthetic data set) every image was rendered from a known mixture of
expressions and labelled by simulated annotator votes, so the true label distribution of every sample
is known. Each tile shows the majority label and its vote share.
"""),
    code('''
if dataset == "synthfer":
    from pathlib import Path
    from adadf_core import synthfer
    root = Path(data_root) if data_root else synthfer.ensure()   # the default copy is generated on first use
    plots.show(plots.synthfer_samples(root), ctx.output_dir, "02_synthfer_samples")
else:
    print("sample grid: shown for SynthFER only")
'''),
    md("""
## Train (or reuse) the Ada-DF run

One run per seed, in `runs_dir/adadf-seed<seed>` (plus a suffix when settings differ from the preset).
A finished run folder is reused, so notebooks 03–07 do not train it again.
"""),
    code('''
runs = [ctx.train("adadf", seed=s) for s in tqdm(ctx.seeds, desc="Ada-DF seeds")]
run = runs[0]
run
'''),
    md("## Accuracy: best epoch (as in the paper) and last epoch"),
    code('''
acc = studies.results_table(runs)[["run", "seed", "best_acc", "best_epoch", "last_acc", "last_epoch", "seconds"]]
if len(acc) > 1:
    summary = acc[["best_acc", "last_acc"]].agg(["mean", "std"])
    print(summary)
studies.save_table(acc, ctx.output_dir, "02_accuracy")
acc
'''),
    md("""
## Learning curves

Accuracy (the best epoch is the star, the last epoch the square), the loss parts (L_CE on the auxiliary
branch, L_KL on the target branch, the rank regularisation L_RR), the two ramp weights and the learning rate.
"""),
    code('plots.show(plots.learning_curves(run, title=f"Ada-DF on {dataset}"), ctx.output_dir, "02_learning_curves")'),
    md("## Per-class accuracy and confusion matrix (last epoch)"),
    code('''
per_class = pd.DataFrame({"last": run.summary["per_class_acc_last"], "best": run.summary["per_class_acc_best"]},
                         index=pd.Index(run.class_names, name="class"))
studies.save_table(per_class, ctx.output_dir, "02_per_class_accuracy")
plots.show(plots.per_class_accuracy(run), ctx.output_dir, "02_per_class_accuracy")
'''),
    code('plots.show(plots.confusion_matrix(run.confusion, run.class_names), ctx.output_dir, "02_confusion_matrix")'),
    md("""
## What to look at

* **Best vs last**: the gap between the two is the optimism of selecting the epoch on the test set.
* **Ramps**: w_KL rises to 1 by epoch ê, then w_CE decays: the target branch takes over.
* **Loss parts**: L_KL should fall steadily once the class distributions are mined.
* **Confusion**: on SynthFER the confusions follow the designed expression overlaps (e.g. Fear/Surprise,
  Disgust/Anger); on RAF-DB, Fear and Disgust are the weakest classes.
"""),
])

# ------------------------------------------------------------------------------------------------ 03
write("03_ablation.ipynb", [
    md("""
# 03 · Ablation (paper Table 2)

Which part of the fusion matters? Four variants on the same data, schedule and seeds (spec §5):

| variant | target branch learns from |
|---|---|
| `baseline` | one ResNet-18, cross-entropy on the hard labels |
| `cd_only` | the class distribution D[y] alone |
| `ld_only` | the sample's label distribution d alone |
| `adadf` | the attention-weighted fusion of both |

The paper's numbers are the best test epoch with an MS-Celeb-1M ResNet-18. SynthFER has no paper
numbers; its table shows the RAF-DB column, labelled as such.
"""),
    params_cell(),
    code(SETUP),
    md("## Train (or reuse) the four variants\n\nThe `adadf` rows reuse the runs of notebook 02."),
    code('''
table = studies.ablation_study(ctx.base_cfg, ctx.seeds, ctx.runs_root, reuse=ctx.reuse)
studies.save_table(table, ctx.output_dir, "03_ablation")
table
'''),
    md("## Side by side with the paper"),
    code('''
view = table[["best", "last", "runs"]].copy()
view["paper best (%)"] = (100 * table["paper_best_acc"]).round(2)
print(table["paper_source"].iloc[0])
view
'''),
    code('plots.show(plots.ablation_bars(table), ctx.output_dir, "03_ablation")'),
    md("""
## What to look at

* The paper's ordering is baseline < cd_only < ld_only < adadf, with gaps of 0.2–1.4 points on RAF-DB.
  With one seed and a short schedule such gaps are within seed noise: run `seeds=[0, 1, 2]` before
  reading an order into them (the table then shows mean ± std).
* `best` selects the epoch on the test set; `last` does not. Compare variants on both.
"""),
])

# ------------------------------------------------------------------------------------------------ 04
write("04_tsne_features.ipynb", [
    md("""
# 04 · Feature space (paper Fig. 3)

The paper shows t-SNE maps of the target branch's pooled features on the test set: the Ada-DF features form
tighter, better separated class clusters than the baseline's. A t-SNE picture alone can mislead, so under
each map we print two numbers computed on the features themselves (not on the 2-D map): the silhouette
score (cosine) and the cross-validated 5-NN accuracy.
"""),
    params_cell('tsne_max_points = 2000         # test samples drawn for the map\ntsne_seed = 0'),
    code(SETUP),
    md("## The two runs (reused from notebooks 02 and 03)"),
    code('''
runs = {name: ctx.train(method) for name, method in tqdm([("baseline", "baseline"), ("Ada-DF", "adadf")],
                                                         desc="runs")}
runs
'''),
    md("## t-SNE, coloured by true class"),
    code('''
fig = plots.tsne_comparison({name: r.features for name, r in runs.items()}, class_names=runs["Ada-DF"].class_names,
                            seed=tsne_seed, max_points=tsne_max_points)
scores = pd.DataFrame(fig.separability).T.rename_axis("model")
plots.show(fig, ctx.output_dir, "04_tsne_features")
studies.save_table(scores, ctx.output_dir, "04_separability")
scores
'''),
    md("""
## What to look at

* Ada-DF should show higher silhouette and k-NN accuracy than the baseline; the map should show fewer
  points of one class inside another's cluster.
* Classes that overlap by design on SynthFER (or that are confused on RAF-DB: Fear/Surprise, Disgust/Anger)
  stay close in both maps: label-distribution learning does not remove genuine ambiguity.
"""),
])

# ------------------------------------------------------------------------------------------------ 05
write("05_class_distributions.ipynb", [
    md("""
# 05 · Class distributions (paper Fig. 4)

After every epoch Ada-DF averages the auxiliary branch's predictions over the training samples of each class.
If a class's mean prediction reaches the threshold t on its own class, that mean becomes the row D[c];
otherwise the row falls back to the *threshold distribution* (t on the diagonal, a constant elsewhere;
spec §4). Rows therefore describe how much each class "looks like" the others.

The `official` profile uses the code's off-diagonal 0.4/(C−1), so a fallback row sums to t + 0.4; the
`paper` profile uses (1 − t)/(C − 1).
"""),
    params_cell(),
    code(SETUP),
    code('''
from adadf_core.config import resolve_config
run = ctx.train("adadf")
cfg = resolve_config(run.config)
D = run.class_distributions          # [epochs + 1, C, C]; D[0] is the initial matrix
print(f"D: {D.shape}, threshold t = {cfg.threshold}, fallback off-diagonal = {cfg.fallback_offdiag}")
'''),
    md("## D after the last epoch\n\nRows outlined in red (and marked *fallback*) did not reach the threshold."),
    code('''
fig = plots.class_distribution_heatmap(D[-1], run.class_names, threshold=cfg.threshold)
plots.show(fig, ctx.output_dir, "05_class_distributions")
last = pd.DataFrame(D[-1], index=pd.Index(run.class_names, name="class"), columns=run.class_names)
last["fallback"] = plots.fallback_rows(D[-1], cfg.threshold)
studies.save_table(last, ctx.output_dir, "05_class_distributions_last")
last
'''),
    md("## How D evolves\n\nThe initial D is the threshold distribution for every class; mined rows replace it as the auxiliary branch learns."),
    code('''
plots.show(plots.class_distribution_evolution(D, run.class_names, threshold=cfg.threshold),
           ctx.output_dir, "05_class_distributions_evolution")
fallback = pd.DataFrame([plots.fallback_rows(D[e], cfg.threshold) for e in range(len(D))],
                        columns=run.class_names).rename_axis("epoch")
studies.save_table(fallback, ctx.output_dir, "05_fallback_by_epoch")
fallback.sum().rename("epochs in fallback")
'''),
    md("""
## What to look at

* Large off-diagonal entries pair the classes the model finds alike (in the paper: Fear↔Surprise,
  Disgust↔Anger/Sadness). On SynthFER compare them with the designed expression overlaps.
* Rare or hard classes (Fear, Disgust) stay in fallback longest: their mean prediction reaches t late.
"""),
])

# ------------------------------------------------------------------------------------------------ 06
write("06_fusion_over_epochs.ipynb", [
    md("""
# 06 · Fusion for single samples (paper Figs. 5 and 6)

For a handful of training samples the trainer logs, every epoch, the label distribution d (auxiliary
branch), the class distribution D[y] of its label, the fused target f and its attention weight w. Fig. 5
shows them for one sample at one epoch; Fig. 6 how d and f develop over training. On SynthFER we also know
each sample's **ground-truth vote distribution**, so we can measure which target is closest to the truth.
"""),
    params_cell('sample_ids = "auto"            # "auto": one ambiguous and one clear sample; or a list of data set indices'),
    code(SETUP),
    code('''
run = ctx.train("adadf")
tracked = run.tracked
indices = list(tracked["indices"])
if sample_ids == "auto":
    picks = plots.pick_tracked_samples(tracked, n=2)
else:
    missing = [i for i in sample_ids if i not in indices]
    if missing:
        raise ValueError(f"sample_ids {missing} are not tracked; tracked samples: {indices}")
    picks = [indices.index(i) for i in sample_ids]
info = pd.DataFrame({
    "index": [int(tracked["indices"][k]) for k in picks],
    "label": [run.class_names[int(tracked["labels"][k])] for k in picks],
    "attention_weight_last": [float(tracked["attention_weight"][-1, k]) for k in picks],
})
if "gt" in tracked:
    import numpy as np
    gt = np.clip(tracked["gt"][picks], 1e-12, 1)
    info["gt_entropy"] = -(gt * np.log(gt)).sum(1)
    info["gt_majority"] = [run.class_names[int(i)] for i in tracked["gt"][picks].argmax(1)]
studies.save_table(info, ctx.output_dir, "06_tracked_samples")
info
'''),
    md("## Fig. 5: d, D[y], f and the votes (last epoch)"),
    code('''
for n, k in enumerate(tqdm(picks, desc="Fig. 5")):
    plots.show(plots.fusion_sample(tracked, k, class_names=run.class_names), ctx.output_dir, f"06_fusion_sample_{n}")
'''),
    md("## Fig. 6: d and f over epochs"),
    code('''
for n, k in enumerate(tqdm(picks, desc="Fig. 6")):
    plots.show(plots.fusion_over_epochs(tracked, k, class_names=run.class_names), ctx.output_dir,
               f"06_fusion_over_epochs_{n}")
'''),
    md("""
## Distance to the ground truth (SynthFER)

Mean KL and JS divergence, over the training samples, between the ground-truth vote distribution and the
label distribution d, the class distribution D[y] and the fused target f.
"""),
    code('''
if "kl_gt_fused" in run.metrics.columns and run.metrics["kl_gt_fused"].notna().any():
    plots.show(plots.divergence_curves(run), ctx.output_dir, "06_divergence_to_ground_truth")
    div = run.metrics[["epoch"] + [c for c in run.metrics.columns if c.startswith(("kl_gt_", "js_gt_"))]]
    studies.save_table(div, ctx.output_dir, "06_divergence_to_ground_truth")
    display(div.tail())
else:
    print("no ground-truth vote distributions on this data set: divergence curves are SynthFER-only")
'''),
    md("""
## What to look at

* Early on d is nearly uniform and the fused f leans on D[y]; d sharpens as the auxiliary branch learns
  (Fig. 6 in the paper).
* The ambiguous sample (low attention, high vote entropy) keeps more of its own d; the clear one is pulled to
  D[y]. Its votes show whether the second-ranked class in f is the one annotators also chose.
* On SynthFER the fused f should be at least as close to the votes as d or D[y] alone.
"""),
])

# ------------------------------------------------------------------------------------------------ 07
write("07_sensitivity_and_noise.ipynb", [
    md("""
# 07 · Sensitivity (paper Table 1) and label noise (paper Table 4)

**Sensitivity.** One hyper-parameter at a time around the preset: the attention floor λ_min, the mining
threshold t and the epoch threshold ê. The preset point is shared by the three sweeps (trained once).

**Label noise.** A share of the training labels is flipped to a uniformly random other class (seeded,
exactly round(p·N) samples; spec §8), or an external label file replaces them; test labels never change.
For SCN (relabelling) and Ada-DF the trainer also logs how the flipped samples are treated.

Both studies run at the budget the parameters set; `None` means the pipeline's per-data-set budget
(`adadf_core.pipeline.BUDGETS`). Methods that cannot be imported fail here loudly.
"""),
    params_cell('''sensitivity_grid = None       # None: the paper's grid over lambda_min, threshold, epoch_threshold
sensitivity_epochs = None     # None: the pipeline's budget for this data set
sensitivity_max_train = None
noise_rates = [0.0, 0.1, 0.2, 0.3]
noise_methods = ["baseline", "adadf", "scn", "slm_aea"]
noise_epochs = None
noise_max_train = None
noise_files = None            # optional: list of label files (RAF-DB list format) or {label: path}
run_sensitivity = True
run_noise = True'''),
    code(SETUP),
    code('''
from adadf_core.pipeline import budget_for
budget = budget_for(dataset, quick)
def pick(value, key):
    return value if value is not None else budget.get(key)
sens_cfg = ctx.variant(epochs=pick(sensitivity_epochs, "sensitivity_epochs"),
                       max_train_samples=pick(sensitivity_max_train, "sensitivity_max_train"))
noise_cfg = ctx.variant(epochs=pick(noise_epochs, "noise_epochs"),
                        max_train_samples=pick(noise_max_train, "noise_max_train"))
grid = sensitivity_grid if sensitivity_grid is not None else studies.DEFAULT_SENSITIVITY_GRID
print("sensitivity:", grid, f"epochs={sens_cfg.epochs}, max_train={sens_cfg.max_train_samples}")
print("noise:", noise_rates, noise_methods, f"epochs={noise_cfg.epochs}, max_train={noise_cfg.max_train_samples}")
'''),
    md("## Table 1: sensitivity"),
    code('''
if run_sensitivity:
    sens = studies.sensitivity_study(sens_cfg, grid, ctx.runs_root, seeds=ctx.seeds, reuse=ctx.reuse)
    studies.save_table(sens, ctx.output_dir, "07_sensitivity")
    plots.show(plots.sensitivity_lines(sens), ctx.output_dir, "07_sensitivity")
    display(sens[["param", "value", "is_base", "best", "last", "runs"]])
'''),
    md("## Table 4: label noise"),
    code('''
if run_noise:
    noise = studies.noise_study(noise_cfg, noise_rates, noise_methods, seeds=ctx.seeds, runs_root=ctx.runs_root,
                                noise_files=noise_files, reuse=ctx.reuse)
    studies.save_table(noise, ctx.output_dir, "07_noise")
    plots.show(plots.noise_plot(noise), ctx.output_dir, "07_noise")
    print(noise["paper_source"].iloc[0])
    display(noise[["method", "noise", "best", "last", "recovered_flipped", "paper_acc"]])
'''),
    md("""
## What to look at

* **Sensitivity**: the paper finds Ada-DF stable over the grid (within about a point on RAF-DB), best near
  λ_min = 0.2, t = 0.7 (RAF-DB), ê = 3. Very low t keeps D[y] soft from the first epoch; very high t keeps
  classes in fallback.
* **Noise**: accuracy should fall more slowly for Ada-DF and SCN than for the baseline; `last` shows the
  memorisation of noisy labels late in training that `best` hides. `recovered_flipped` is the share of
  flipped samples whose training target points back to the clean class.
* The paper's noise numbers are RAF-DB with ResNet-18 (EAC's too, although the Ada-DF paper labels them ResNet-50).
"""),
])
