"""The notebooks: structure (fast) and one quick end-to-end pipeline run shared by the checks (slow)."""
from __future__ import annotations

import ast
import json
import os

import nbformat
import numpy as np
import pandas as pd
import pytest

from adadf_core import pipeline
from adadf_core.studies import project_root

NOTEBOOKS = project_root() / "notebooks"
MINE = ["02_training", "03_ablation", "04_tsne_features", "05_class_distributions", "06_fusion_over_epochs",
        "07_sensitivity_and_noise", "08_comparison"]
COMMON = {"dataset": "synthfer", "data_root": None, "output_dir": "results/synthfer", "runs_dir": None,
          "epochs": None, "seeds": [0], "device": "auto", "profile": "official", "quick": False,
          "reuse_runs": True}


def load(name):
    return nbformat.read(str(NOTEBOOKS / f"{name}.ipynb"), as_version=4)


# ------------------------------------------------------------------------------------- structure

@pytest.mark.parametrize("name", MINE)
def test_notebook_structure(name):
    nb = load(name)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "notebooks are stored without outputs"
            ast.parse("\n".join(ln for ln in cell.source.splitlines() if not ln.startswith("%")))
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    if "for " in code:
        assert "from tqdm.auto import tqdm" in code
    assert any(c.cell_type == "markdown" and "What to look at" in c.source for c in nb.cells)


@pytest.mark.parametrize("name", MINE)
def test_common_parameters(name):
    params = pipeline.notebook_parameters(NOTEBOOKS / f"{name}.ipynb")
    for key, default in COMMON.items():
        assert key in params, f"{name} lacks parameter {key}"
        assert ast.literal_eval(params[key]) == default


def test_noise_parameters_and_budget_names_are_declared():
    params = pipeline.notebook_parameters(NOTEBOOKS / "07_sensitivity_and_noise.ipynb")
    assert ast.literal_eval(params["noise_rates"]) == [0.0, 0.1, 0.2, 0.3]
    assert ast.literal_eval(params["noise_methods"]) == ["baseline", "adadf", "scn", "slm_aea"]
    declared = set().union(*[pipeline.notebook_parameters(b) for b in pipeline.find_notebooks()])
    for dataset, budget in pipeline.BUDGETS.items():
        assert set(budget) <= declared, f"BUDGETS[{dataset!r}] names parameters no notebook declares"
    assert set(pipeline.QUICK_PARAMETERS) <= declared


# ------------------------------------------------------------------------------------- end to end

@pytest.fixture(scope="session")
def quick_results(tmp_path_factory):
    """One quick pipeline run over every notebook (runs are shared between notebooks)."""
    from adadf_core import synthfer

    tmp = tmp_path_factory.mktemp("reproduce")
    data = tmp / "synthfer"               # a small private SynthFER: fast, and independent of data/
    synthfer.generate(data, n_train=320, n_test=120, progress=False)
    only = os.environ.get("ADADF_TEST_NOTEBOOKS")   # e.g. "02,03" to narrow a local run
    result = pipeline.reproduce(dataset="synthfer", data_root=str(data), output=tmp / "synthfer-quick",
                                quick=True, device="cpu", only=only, progress=False,
                                params={"native_recipes": True} if not only or "08" in only else None)
    return result


def table(result, name):
    path = result.output / "tables" / f"{name}.csv"
    assert path.is_file(), f"missing table {name}"
    return pd.read_csv(path)


def in_unit(values):
    v = np.asarray(values, dtype=float)
    return bool(np.all((v >= 0) & (v <= 1)))


@pytest.mark.slow
def test_quick_pipeline_outputs(quick_results):
    r = quick_results
    timings = pd.read_csv(r.output / "timings.csv")
    assert (timings["status"] == "ok").all()
    for name in MINE:
        assert (r.output / "notebooks" / f"{name}.ipynb").is_file()
    figures = {p.stem for p in r.figures}
    expected = {"02_synthfer_samples", "02_learning_curves", "02_per_class_accuracy", "02_confusion_matrix",
                "03_ablation", "04_tsne_features", "05_class_distributions", "05_class_distributions_evolution",
                "06_fusion_sample_0", "06_fusion_sample_1", "06_fusion_over_epochs_0", "06_divergence_to_ground_truth",
                "07_sensitivity", "07_noise"}
    assert expected <= figures, expected - figures
    readme = (r.output / "README.md").read_text()
    for stem in figures:
        assert f"](figures/{stem}.png)" in readme
    assert "### 03_ablation" in readme and "| adadf |" in readme


@pytest.mark.slow
def test_quick_training_and_ablation_tables(quick_results):
    acc = table(quick_results, "02_accuracy")
    assert len(acc) == 1 and in_unit(acc[["best_acc", "last_acc"]]) and acc["best_acc"][0] >= acc["last_acc"][0]
    abl = table(quick_results, "03_ablation").set_index("variant")
    assert list(abl.index) == ["baseline", "cd_only", "ld_only", "adadf"]
    assert in_unit(abl[["best_acc", "last_acc"]]) and (abl["runs"] == 1).all()
    assert abl.loc["adadf", "best_acc"] == pytest.approx(acc["best_acc"][0])      # 03 reused 02's run
    assert abl.loc["adadf", "paper_best_acc"] == pytest.approx(0.9004)
    runs = quick_results.output / "runs"
    plain_adadf = [p for p in runs.iterdir() if p.name.startswith("adadf-") and "lmin" not in p.name
                   and "noise" not in p.name]
    assert len(plain_adadf) == 1


@pytest.mark.slow
def test_quick_features_and_distributions(quick_results):
    sep = table(quick_results, "04_separability").set_index("model")
    assert set(sep.index) == {"baseline", "Ada-DF"}
    assert in_unit(sep["knn_acc"]) and sep["silhouette"].between(-1, 1).all()
    D = table(quick_results, "05_class_distributions_last").set_index("class")
    fallback = D.pop("fallback").astype(bool)
    sums = D.sum(axis=1)
    assert np.allclose(sums[~fallback], 1.0, atol=1e-4)                       # mined rows are distributions
    assert np.allclose(sums[fallback], 0.7 + 0.4, atol=1e-4)                  # official fallback: t + 0.4
    from adadf_core.runs import list_runs
    run = [r for r in list_runs(quick_results.output / "runs") if r.config.method == "adadf"][0]
    t = run.tracked
    assert np.allclose(t["label_dist"].sum(-1), 1.0, atol=1e-4)
    # f = (1 - w) d + w D[y]; D[y] sums to 1, or to t + 0.4 for an official fallback row
    w = t["attention_weight"]
    assert np.allclose(t["fused"], (1 - w[..., None]) * t["label_dist"] + w[..., None] * t["class_dist"], atol=1e-4)
    assert np.allclose(t["class_dist"].sum(-1)[~np.isclose(t["class_dist"].max(-1), 0.7)], 1.0, atol=1e-4)
    assert np.all((t["attention_weight"] >= 0.2 - 1e-6) & (t["attention_weight"] <= 1 + 1e-6))
    samples = table(quick_results, "06_tracked_samples")
    assert len(samples) == 2 and samples["gt_entropy"][0] >= samples["gt_entropy"][1]


@pytest.mark.slow
def test_quick_sensitivity_and_noise(quick_results):
    sens = table(quick_results, "07_sensitivity")
    assert sens["param"].tolist() == ["lambda_min", "lambda_min"]
    assert sens["is_base"].tolist() == [False, True]
    assert in_unit(sens[["best_acc", "last_acc"]])
    noise = table(quick_results, "07_noise")
    assert sorted(zip(noise["method"], noise["noise"].astype(str))) == \
        [("adadf", "0.0"), ("adadf", "0.2"), ("baseline", "0.0"), ("baseline", "0.2")]
    assert in_unit(noise[["best_acc", "last_acc"]])
    rec = noise["recovered_flipped"].dropna()
    assert in_unit(rec)
    record = json.loads((quick_results.output / "pipeline.json").read_text())
    assert record["parameters"]["quick"] is True


@pytest.mark.slow
def test_comparison_table_has_every_method_and_the_native_recipes(quick_results):
    t = table(quick_results, "comparison").set_index("method")
    assert list(t.index) == ["baseline", "adadf", "scn", "slm_aea", "scn (native)", "slm_aea (native)"]
    assert in_unit(t["best_acc"]) and in_unit(t["last_acc"])
    assert (t["best_acc"] >= t["last_acc"] - 1e-12).all()           # best over epochs includes the last
    # SLM-AEA's published number is not attributed to ResNet-18
    assert "not stated" in t.loc["slm_aea", "paper_backbone"]
    assert (quick_results.output / "figures" / "comparison.png").is_file()
