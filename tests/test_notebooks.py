"""The notebooks: stored clean, prose without typed-in settings, only existing adadf_core names (fast), and
one quick end-to-end pipeline run shared by the checks (slow).

The notebooks themselves are the only source (edited in JupyterLab, executed by papermill); these tests keep
them clean. Notebook 00 (the method on a hand-made batch) is executed in tests/test_method_notebook.py."""
from __future__ import annotations

import ast
import dataclasses
import importlib
import json
import os
import re
import shutil
import typing
from types import ModuleType

import nbformat
import numpy as np
import pandas as pd
import pytest

from adadf_core.pipeline import budgets
from adadf_core.pipeline import parameters as pipeline_params, reproduce
from adadf_core.pipeline.notebook import project_root

NOTEBOOKS = project_root() / "notebooks"
MINE = ["02_training", "03_ablation", "04_tsne_features", "05_class_distributions", "06_fusion_over_epochs",
        "07_sensitivity_and_noise", "08_comparison", "09_predict"]
COMMON = {"dataset": "synthfer", "data_root": None, "output_dir": None, "runs_dir": None,
          "epochs": None, "seeds": "auto", "device": "auto", "profile": "official", "quick": False,
          "reuse_runs": True}
TRAINING = {**COMMON, "pretrained": "auto", "train_overrides": {}}
# every parameter of every notebook with the default it must be stored with (a `quick = True` or a local
# path left in a parameters cell after a session in JupyterLab fails here)
DEFAULTS = {
    "00_method": {"output_dir": None, "seed": 0, "dataset": "synthfer", "profile": "official",
                  "n_samples": 6, "sample": 0, "pass_size": 300},
    "01_alignment": {"dataset": "synthfer", "data_root": None, "output_dir": None, "quick": False,
                     "detector": "mtcnn", "n_examples": 8, "size": 100, "multi_face": "largest",
                     "error_images": 200, "aligned_root": None},
    "02_training": {**TRAINING, "nproc": 1},
    "03_ablation": {**TRAINING, "study_seeds": "auto"},
    "04_tsne_features": {**TRAINING, "tsne_max_points": 2000, "tsne_seed": 0},
    "05_class_distributions": TRAINING,
    "06_fusion_over_epochs": {**TRAINING, "study_seeds": "auto", "sample_ids": "auto"},
    "07_sensitivity_and_noise": {**TRAINING, "study_seeds": "auto", "sensitivity_grid": "auto", "sensitivity_epochs": None,
                                 "sensitivity_max_train": None, "sensitivity_seeds": "auto",
                                 "noise_rates": "auto", "noise_methods": "auto", "noise_epochs": None,
                                 "noise_max_train": None, "noise_files": None, "run_sensitivity": True,
                                 "run_noise": True},
    "08_comparison": {**TRAINING, "study_seeds": "auto", "native_recipes": False},
    "09_predict": {**TRAINING, "best": False, "photos_dir": None, "n_synthfer": 6},
}
ALL = sorted(DEFAULTS)
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (adadf)"}
EXECUTION_TRACES = ("execution", "papermill", "ExecuteTime", "widgets")   # metadata an executed copy carries


def load(name):
    return nbformat.read(str(NOTEBOOKS / f"{name}.ipynb"), as_version=4)


def code_of(nb) -> str:
    """The code cells as one module (IPython magics and shell lines dropped)."""
    return "\n".join("\n".join(ln for ln in c.source.splitlines() if not ln.lstrip().startswith(("%", "!")))
                     for c in nb.cells if c.cell_type == "code")


# ------------------------------------------------------------------------------------- stored clean

def test_every_notebook_has_expectations():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == ALL
    assert [b.stem for b in pipeline_params.find_notebooks()] == ALL          # 00_method runs first


@pytest.mark.parametrize("name", ALL)
def test_notebook_is_stored_clean(name):
    nb = load(name)
    nbformat.validate(nb)
    assert {k: nb.metadata["kernelspec"].get(k) for k in KERNELSPEC} == KERNELSPEC
    assert not set(nb.metadata) & set(EXECUTION_TRACES), f"{name}: notebook metadata of an executed copy"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    for i, cell in enumerate(nb.cells):
        assert not set(cell.metadata) & set(EXECUTION_TRACES), f"{name} cell {i}: metadata of an executed cell"
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name} cell {i} is stored with outputs"
            ast.parse("\n".join(ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!"))))
    params = {k: ast.literal_eval(v) for k, v in pipeline_params.notebook_parameters(NOTEBOOKS / f"{name}.ipynb").items()}
    assert params == DEFAULTS[name], f"{name}: the parameters cell differs from the stored defaults"


@pytest.mark.parametrize("name", MINE)
def test_notebook_structure(name):
    nb = load(name)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert any(c.cell_type == "markdown" and "What to look at" in c.source for c in nb.cells)


@pytest.mark.parametrize("name", MINE)
def test_common_parameters(name):
    params = pipeline_params.notebook_parameters(NOTEBOOKS / f"{name}.ipynb")
    for key, default in COMMON.items():
        assert key in params, f"{name} lacks parameter {key}"
        assert ast.literal_eval(params[key]) == default


def test_noise_parameters_and_budget_names_are_declared():
    params = pipeline_params.notebook_parameters(NOTEBOOKS / "07_sensitivity_and_noise.ipynb")
    assert ast.literal_eval(params["noise_rates"]) == "auto"         # the budget's rates, else 0, 10, 20, 30 %
    assert ast.literal_eval(params["noise_methods"]) == "auto"       # the budget's methods, else all four
    declared = set().union(*[pipeline_params.notebook_parameters(b) for b in pipeline_params.find_notebooks()])
    for dataset, budget in budgets.BUDGETS.items():
        assert set(budget) <= declared, f"BUDGETS[{dataset!r}] names parameters no notebook declares"
    assert set(budgets.QUICK_STUDY) <= declared


# ------------------------------------------------------------------------------------- prose

# Numbers the config or the budget decides (epochs, relabel epoch, seeds, batch sizes, t, ê, λ, margins,
# image sizes) are printed by code cells, not typed into the prose, where they drift from the config. A line
# may quote such a number only as a published source's (it says "paper" or "README").
TYPED_SETTING = [
    r"\b\d+\s+epochs?\b", r"\bepochs?\s+\d", r"\b(?:\d+|one|two|three)\s+seeds?\b", r"\bbatch(?:es)?\s+(?:of\s+)?\d",
    r"\blr\s+\d", r"learning rate\s+\d", r"(?:\bt|ê|λ(?:_\w+)?|δ\d?|\bk|\bp|α|β|margin)\s*=\s*\d",
    r"\b\d+\s*[×x]\s*\d+\b", r"\b\d[\d,]*\s+(?:training\s+)?(?:images|samples)\b",
]


@pytest.mark.parametrize("name", ALL)
def test_prose_does_not_type_in_settings(name):
    patterns = TYPED_SETTING if name != "01_alignment" else TYPED_SETTING[:-2]  # 01: alignment template sizes
    for i, cell in enumerate(load(name).cells):
        if cell.cell_type != "markdown":
            continue
        prose = re.sub(r"\$\$.*?\$\$|\$[^$\n]*\$", " ", cell.source, flags=re.DOTALL)   # LaTeX indices are no settings
        for line in prose.splitlines():
            hits = [p for p in patterns if re.search(p, line, flags=re.IGNORECASE)]
            assert not hits or re.search(r"paper|readme", line, flags=re.IGNORECASE), \
                f"{name} cell {i}: {line.strip()!r} types in a setting ({hits[0]}); print it from the config instead"


# ------------------------------------------------------------------------------------- adadf_core names

def _return_type(fn):
    """The dataclass a function (or a dataclass itself) returns, from its annotations; else None."""
    if isinstance(fn, type):
        return fn if dataclasses.is_dataclass(fn) else None
    try:
        hint = typing.get_type_hints(fn).get("return")
    except Exception:
        return None
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


class NameChecker:
    """Resolves ``module.attr``, ``from adadf_core.x import y`` and attribute chains on values whose type is
    known (dataclasses returned by annotated adadf_core functions: ``ctx = notebook.setup(...)``,
    ``ctx.base_cfg.epochs``) and records every name that does not exist."""

    def __init__(self, tree: ast.Module):
        self.tree, self.bound, self.typed, self.missing = tree, {}, {}, set()

    def run(self) -> set[str]:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "adadf_core":
                module = importlib.import_module(node.module)
                for alias in node.names:
                    self._bind_from(module, alias)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "adadf_core":
                        module = importlib.import_module(alias.name)
                        self.bound[alias.asname or "adadf_core"] = module if alias.asname else \
                            importlib.import_module("adadf_core")
        for _ in range(3):                    # typed names may depend on other typed names
            for node in ast.walk(self.tree):
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    kind = self.resolve(node.value)
                    if kind and kind[0] == "instance":
                        self.typed[node.targets[0].id] = kind[1]
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Attribute):
                self.resolve(node)
        return self.missing

    def _bind_from(self, module, alias):
        if hasattr(module, alias.name):
            obj = getattr(module, alias.name)
        else:
            try:
                obj = importlib.import_module(f"{module.__name__}.{alias.name}")
            except ImportError:
                self.missing.add(f"{module.__name__}.{alias.name}")
                return
        self.bound[alias.asname or alias.name] = obj

    def resolve(self, node):
        """("module", m), ("object", obj) or ("instance", dataclass) for what ``node`` evaluates to, or None."""
        if isinstance(node, ast.Name):
            if node.id in self.bound:
                obj = self.bound[node.id]
                return ("module", obj) if isinstance(obj, ModuleType) else ("object", obj)
            return ("instance", self.typed[node.id]) if node.id in self.typed else None
        if isinstance(node, ast.Call):
            kind = self.resolve(node.func)
            cls = _return_type(kind[1]) if kind and kind[0] == "object" else None
            return ("instance", cls) if cls else None
        if not isinstance(node, ast.Attribute):
            return None
        base = self.resolve(node.value)
        if base is None or base[0] == "object" and not isinstance(base[1], type):
            return None
        owner = base[1]
        fields = {f.name for f in dataclasses.fields(owner)} if base[0] == "instance" else set()
        if node.attr not in fields and not hasattr(owner, node.attr):
            self.missing.add(f"{getattr(owner, '__name__', owner)}.{node.attr}")
            return None
        if base[0] == "instance":
            if node.attr in fields:
                hint = typing.get_type_hints(owner).get(node.attr)
                return ("instance", hint) if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None
            return ("object", getattr(owner, node.attr))
        obj = getattr(owner, node.attr)
        return ("module", obj) if isinstance(obj, ModuleType) else ("object", obj)


@pytest.mark.parametrize("name", ALL)
def test_notebooks_use_only_existing_adadf_core_names(name):
    checker = NameChecker(ast.parse(code_of(load(name))))
    missing = checker.run()
    assert not missing, f"{name} uses names adadf_core does not have: {sorted(missing)}"
    if name in MINE:
        assert checker.typed.get("ctx") is not None, "the checker no longer sees the notebook context"


def test_name_checker_reports_a_missing_name():
    code = ("from adadf_core import plots\nfrom adadf_core.pipeline import notebook\n"
            "from adadf_core.studies import tables\nfrom adadf_core.config import make_config, no_such_thing\n"
            "ctx = notebook.setup()\nplots.no_such_plot()\nctx.base_cfg.no_such_field\nctx.no_such_attr\n"
            "cfg = make_config('synthfer')\ncfg.epochs\ncfg.no_such_epochs\ntables.save_table\n")
    assert NameChecker(ast.parse(code)).run() == {
        "adadf_core.config.no_such_thing", "adadf_core.plots.no_such_plot", "TrainConfig.no_such_field",
        "NotebookContext.no_such_attr", "TrainConfig.no_such_epochs"}


# ------------------------------------------------------------------------------------- end to end

def selected() -> list[str]:
    """The notebooks the quick run executes: all, or those named in ADADF_TEST_NOTEBOOKS (e.g. "00,02")."""
    return [b.stem for b in pipeline_params.find_notebooks(only=os.environ.get("ADADF_TEST_NOTEBOOKS") or None)]


def need(*names):
    """Skip a check whose notebooks the narrowed run (ADADF_TEST_NOTEBOOKS) did not execute."""
    missing = [n for n in names if n not in selected()]
    if missing:
        pytest.skip(f"ADADF_TEST_NOTEBOOKS leaves out {', '.join(missing)}")


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """One quick pipeline run over every notebook (runs are shared between notebooks); its 1-2 GB go with
    the module."""
    from adadf_core.data import synthfer

    tmp = tmp_path_factory.mktemp("reproduce")
    data = tmp / "synthfer"               # a small private SynthFER: fast, and independent of data/
    synthfer.generate(data, n_train=320, n_test=120, progress=False)
    only = os.environ.get("ADADF_TEST_NOTEBOOKS")   # e.g. "02,03" to narrow a local run
    result = reproduce.reproduce(dataset="synthfer", data_root=str(data), output=tmp / "synthfer-quick",
                                quick=True, device="cpu", only=only, progress=False,
                                params={"native_recipes": True} if not only or "08" in only else None)
    yield result
    shutil.rmtree(tmp, ignore_errors=True)


def table(result, name):
    path = result.output / "tables" / f"{name}.csv"
    assert path.is_file(), f"missing table {name}"
    return pd.read_csv(path)


def in_unit(values):
    v = np.asarray(values, dtype=float)
    return bool(np.all((v >= 0) & (v <= 1)))


def assert_best_and_last_match_metrics(runs_root, rows: pd.DataFrame):
    """best_acc is the maximum of the run's metrics.csv test_acc column, last_acc its final row."""
    assert len(rows)
    for row in rows.itertuples(index=False):
        metrics = pd.read_csv(runs_root / row.run / "metrics.csv")
        test_acc = pd.to_numeric(metrics["test_acc"], errors="coerce")
        assert row.best_acc == pytest.approx(test_acc.max(), abs=5e-5), f"{row.run}: best_acc"   # CSV: 4 decimals
        assert row.last_acc == pytest.approx(test_acc.iloc[-1], abs=5e-5), f"{row.run}: last_acc"


FIGURES = {"00_loss_weight_ramps", "00_class_distributions", "00_fusion_sample",
           "02_synthfer_samples", "02_learning_curves", "02_per_class_accuracy", "02_confusion_matrix",
           "03_ablation", "04_tsne_features", "05_class_distributions", "05_class_distributions_evolution",
           "06_fusion_sample_0", "06_fusion_sample_1", "06_fusion_over_epochs_0", "06_divergence_to_ground_truth",
           "06_ground_truth",
           "07_sensitivity", "07_noise", "09_synthfer_votes"}


@pytest.mark.slow
def test_quick_pipeline_outputs(quick_results):
    r = quick_results
    ran = selected()
    timings = pd.read_csv(r.output / "timings.csv")
    assert (timings["status"] == "ok").all()
    for name in ran:
        assert (r.output / "notebooks" / f"{name}.ipynb").is_file()
    figures = {p.stem for p in r.figures}
    expected = {f for f in FIGURES if any(f.startswith(n[:3]) for n in ran)}
    assert expected <= figures, expected - figures
    readme = (r.output / "README.md").read_text()
    for stem in figures:
        assert f"](figures/{stem}.png)" in readme
    if "00_method" in ran:
        assert json.loads((r.output / "tables" / "00_method.json").read_text())["dataset"] == "synthfer"
    if "03_ablation" in ran:
        assert "### 03_ablation" in readme and "| adadf |" in readme


@pytest.mark.slow
def test_quick_training_table(quick_results):
    need("02_training")
    card = table(quick_results, "02_accuracy")
    per_run = table(quick_results, "02_accuracy_runs")
    assert len(card) == 1 and card["runs"][0] == 2 and card["seeds"][0] == "0,1"      # quick: two seeds
    assert in_unit(card[["best_acc", "last_acc", "mean_last_k_acc", "best_balanced", "last_balanced"]])
    assert card["last_acc"][0] == pytest.approx(per_run["last_acc"].mean(), abs=1e-4)
    assert card["last_acc_lo"][0] <= card["last_acc"][0] <= card["last_acc_hi"][0]
    assert_best_and_last_match_metrics(quick_results.output / "runs", per_run)
    md = (quick_results.output / "tables" / "02_accuracy.md").read_text()
    assert md.startswith("Protocol:") and "best (test-selected)" in md and "[" in md


@pytest.mark.slow
def test_quick_ablation_table(quick_results):
    need("02_training", "03_ablation")
    acc = table(quick_results, "02_accuracy")
    abl = table(quick_results, "03_ablation").set_index("variant")
    assert list(abl.index) == ["baseline", "cd_only", "ld_only", "adadf"]
    assert in_unit(abl[["best_acc", "last_acc"]]) and (abl["runs"] == 2).all()
    assert abl.loc["adadf", "best_acc"] == pytest.approx(acc["best_acc"][0], abs=1e-4)  # 03 reused 02's runs
    assert abl.loc["adadf", "paper_best_acc"] == pytest.approx(0.9004)
    assert (abl.loc[["cd_only", "ld_only", "adadf"], "pairs"] == 2).all() and np.isnan(abl.loc["baseline", "diff_last_acc"])
    assert abl.loc["adadf", "diff_last_acc"] == pytest.approx(abl.loc["adadf", "last_acc"] - abl.loc["baseline", "last_acc"],
                                                              abs=2e-4)
    runs = quick_results.output / "runs"
    plain_adadf = [p for p in runs.iterdir() if p.name.startswith("adadf-") and "lmin" not in p.name
                   and "noise" not in p.name]
    assert len(plain_adadf) == 2                                                     # one per seed


@pytest.mark.slow
def test_quick_features_and_distributions(quick_results):
    need("04_tsne_features", "05_class_distributions", "06_fusion_over_epochs")
    sep = table(quick_results, "04_separability").set_index("model")
    assert set(sep.index) == {"baseline", "Ada-DF"}
    assert in_unit(sep["knn_acc"]) and sep["silhouette"].between(-1, 1).all()
    D = table(quick_results, "05_class_distributions_last").set_index("class")
    fallback = D.pop("fallback").astype(bool)
    sums = D.sum(axis=1)
    assert np.allclose(sums[~fallback], 1.0, atol=1e-3)          # mined rows are distributions (CSV: 4 decimals)
    assert np.allclose(sums[fallback], 0.7 + 0.4, atol=1e-3)     # official fallback: t + 0.4
    from adadf_core.runs.reader import list_runs
    run = [r for r in list_runs(quick_results.output / "runs") if r.config.method == "adadf"
           and r.config.lambda_min == 0.2 and r.config.noise_rate == 0][0]    # the preset's λ_min: w in [0.2, 1]
    t = run.tracked
    assert np.allclose(t["label_dist"].sum(-1), 1.0, atol=1e-4)
    # f = (1 - w) d + w D[y]; D[y] sums to 1, or to t + 0.4 for an official fallback row
    w = t["attention_weight"]
    assert np.allclose(t["fused"], (1 - w[..., None]) * t["label_dist"] + w[..., None] * t["class_dist"], atol=1e-4)
    assert np.allclose(t["class_dist"].sum(-1)[~np.isclose(t["class_dist"].max(-1), 0.7)], 1.0, atol=1e-4)
    assert np.all((t["attention_weight"] >= 0.2 - 1e-6) & (t["attention_weight"] <= 1 + 1e-6))
    samples = table(quick_results, "06_tracked_samples")
    assert len(samples) == 2 and samples["gt_entropy"][0] >= samples["gt_entropy"][1]
    div = table(quick_results, "06_ground_truth_divergence")
    assert {"all faces", "ambiguous third (vote entropy)", "flipped labels (20 % noise)"} <= set(div["group"])
    assert (div["seeds"] == 2).all() and div["ci_lo"].le(div["mean"] + 1e-9).all()
    claims = table(quick_results, "06_claims")
    assert len(claims) == 5 and claims["verdict"].notna().all()


@pytest.mark.slow
def test_quick_sensitivity_and_noise(quick_results):
    need("07_sensitivity_and_noise")
    sens = table(quick_results, "07_sensitivity")
    assert sens["param"].tolist() == ["lambda_min", "lambda_min"]
    assert sens["is_base"].tolist() == [False, True] and (sens["runs"] == 1).all()     # Table 1: one seed
    assert in_unit(sens[["best_acc", "last_acc"]])
    noise = table(quick_results, "07_noise")
    assert sorted(zip(noise["method"], noise["noise"].astype(str))) == \
        [("adadf", "0.0"), ("adadf", "0.2"), ("baseline", "0.0"), ("baseline", "0.2")]
    assert in_unit(noise[["best_acc", "last_acc"]]) and (noise["runs"] == 2).all()
    assert noise[noise["method"] == "adadf"]["pairs"].eq(2).all()                   # paired to the baseline
    # Ada-DF logs, under synthetic noise, the share of flipped samples whose fused target points back to the
    # clean class: a value in [0, 1] at every noise rate > 0 (NaN would mean it was not logged)
    ada = noise[(noise["method"] == "adadf") & (noise["noise"].astype(float) > 0)]
    assert len(ada) == 1 and ada["recovered_flipped"].notna().all() and in_unit(ada["recovered_flipped"])
    record = json.loads((quick_results.output / "pipeline.json").read_text())
    assert record["parameters"]["quick"] is True


@pytest.mark.slow
def test_comparison_table_has_every_method_and_the_native_recipes(quick_results):
    need("08_comparison")
    t = table(quick_results, "comparison").set_index("method")
    assert list(t.index) == ["baseline", "adadf", "scn", "slm_aea", "scn (native)", "slm_aea (native)"]
    assert in_unit(t["best_acc"]) and in_unit(t["last_acc"])
    # each run's best/last come from its metrics.csv; the table's are their means over seeds
    per_run = table(quick_results, "comparison_runs")
    assert_best_and_last_match_metrics(quick_results.output / "runs", per_run)
    means = per_run.groupby("method", sort=False)[["best_acc", "last_acc"]].mean()
    assert list(means.index) == list(t.index)
    assert np.allclose(t.loc[means.index, ["best_acc", "last_acc"]], means, atol=1e-4)
    # SLM-AEA's published number is not attributed to ResNet-18
    assert "not stated" in t.loc["slm_aea", "paper_backbone"]
    assert (quick_results.output / "figures" / "comparison.png").is_file()


@pytest.mark.slow
def test_predict_notebook_classifies_with_the_runs_own_model(quick_results):
    """09 reuses 02's Ada-DF run (no new run folder) and its probabilities are distributions."""
    if "09_predict" not in selected():
        pytest.skip("09 not selected")
    votes = table(quick_results, "09_synthfer_votes")
    assert len(votes) == 6 and votes["js_to_votes"].between(0, np.log(2) + 1e-6).all()
    assert votes["p_label"].between(0, 1).all()
    runs = [p.name for p in (quick_results.output / "runs").iterdir() if p.name.startswith("adadf-")
            and "lmin" not in p.name and "noise" not in p.name]
    assert len(runs) == 2                                                             # 02's, one per seed


# ------------------------------------------------------------------------ defaults = the pipeline's

SETUP_ARGS = ("dataset", "data_root", "output_dir", "runs_dir", "epochs", "seeds", "device", "profile", "quick",
              "reuse_runs", "pretrained", "train_overrides")


@pytest.mark.parametrize("dataset", ["synthfer", "raf"])
def test_notebook_defaults_compute_what_make_reproduce_computes(dataset, tmp_path, monkeypatch):
    """A student pressing Run All in JupyterLab gets the pipeline's configuration: every parameter the
    pipeline passes equals the notebook's default, or the default is None / "auto" and resolves (from
    budgets.budget_for) to the same value; and notebook.setup gives the same base config and seeds."""
    from adadf_core.pipeline import notebook
    from adadf_core.studies import pretrain

    monkeypatch.setattr(pretrain, "synthfer_backbone", lambda **kw: tmp_path / "backbone.pth")
    data_root = None if dataset == "synthfer" else str(tmp_path / "raf")
    books = pipeline_params.find_notebooks()
    declared = {b.name: pipeline_params.notebook_parameters(b) for b in books}
    passed = pipeline_params.notebook_inputs(declared, dataset, data_root, tmp_path / "out", False, "auto",
                                      "official", {})
    budget = budgets.budget_for(dataset)
    for name, given in passed.items():
        defaults = pipeline_params.effective_parameters(declared[name], {"dataset": dataset, "data_root": data_root})
        for key, value in given.items():
            if key in ("output_dir", "runs_dir"):
                continue
            default = defaults[key]
            assert default == value or (default in (None, "auto") and budget.get(key) == value), \
                f"{name}: {key} defaults to {default!r}, the pipeline passes {value!r}"
        if "train_overrides" in declared[name]:
            lab = notebook.setup(**{k: v for k, v in {**defaults, "output_dir": str(tmp_path / "lab")}.items()
                                    if k in SETUP_ARGS})
            pipe = notebook.setup(**{k: v for k, v in {**defaults, **given}.items() if k in SETUP_ARGS})
            strip = dict(run_dir=None)
            assert dataclasses.replace(lab.base_cfg, **strip) == dataclasses.replace(pipe.base_cfg, **strip), name
            assert lab.seeds == pipe.seeds == list(budget["seeds"]), name


def test_setup_parses_text_parameters_as_adadf_reproduce_does(tmp_path):
    """Plain `papermill -p` hands text; setup reads it as `adadf reproduce -p` would."""
    from adadf_core.pipeline import notebook

    ctx = notebook.setup(output_dir=str(tmp_path / "o"), quick="true", seeds="[3, 4]", pretrained="None",
                         train_overrides='{"lambda_min": 0.1}', epochs="1", device="cpu")
    assert ctx.quick is True and ctx.seeds == [3, 4] and ctx.base_cfg.epochs == 1
    assert ctx.base_cfg.lambda_min == 0.1 and ctx.base_cfg.pretrained is None
    assert ctx.output_dir.name == "o-quick"                      # quick results go to a folder of their own
    assert notebook.parse("[0.1, 0.2]", "false", "raf", None) == ([0.1, 0.2], False, "raf", None)
    with pytest.raises(ValueError, match="train_overrides must be a dict"):
        notebook.setup(output_dir=str(tmp_path / "o"), quick=True, train_overrides="[1]")


def test_notebooks_never_write_into_the_reference(tmp_path, monkeypatch):
    from adadf_core.pipeline import notebook

    with pytest.raises(ValueError, match="committed reference"):
        notebook.setup(output_dir="results/reference/synthfer", quick=False, pretrained=None)
    monkeypatch.setenv(notebook.LAB_RESULTS_VARIABLE, str(tmp_path / "lab"))
    assert notebook.output_folder(None, "raf") == (tmp_path / "lab" / "raf").resolve()
    monkeypatch.delenv(notebook.LAB_RESULTS_VARIABLE)
    assert notebook.output_folder(None, "synthfer", quick=True) == \
        (project_root() / "results" / "lab" / "synthfer-quick").resolve()


@pytest.mark.slow
def test_plain_papermill_takes_dict_and_list_parameters(tiny_synthfer, tmp_path):
    """`papermill -p train_overrides '{...}' -p seeds '[0]'` hands the notebook text; it runs with the values
    `adadf reproduce -p` would give (this failed with a TypeError before notebook.setup parsed text)."""
    import subprocess
    import sys

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "papermill", str(NOTEBOOKS / "02_training.ipynb"), str(tmp_path / "02.ipynb"),
           "-k", "python3", "--cwd", str(NOTEBOOKS), "-p", "quick", "true", "-p", "seeds", "[0]",
           "-p", "device", "cpu", "-p", "data_root", str(tiny_synthfer), "-p", "output_dir", str(out),
           "-p", "train_overrides", '{"lambda_min": 0.1}']
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(project_root())})
    assert done.returncode == 0, done.stderr[-3000:]
    card = pd.read_csv(out.with_name("out-quick") / "tables" / "02_accuracy.csv")    # quick: its own folder
    assert card["runs"][0] == 1 and str(card["seeds"][0]) == "0"
    (run,) = [p for p in (out.with_name("out-quick") / "runs").iterdir() if p.is_dir()]
    assert json.loads((run / "config.json").read_text())["config"]["lambda_min"] == 0.1
