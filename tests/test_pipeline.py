"""pipeline.py with throwaway notebooks in a tmp folder (real papermill + kernel, no training)."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from adadf_core.pipeline import budgets
from adadf_core.pipeline import notebook, parameters as pipeline_params, provenance, reference, reproduce

PARAMS = '''dataset = "synthfer"
data_root = None
output_dir = "results/x"   # where figures/ and tables/ go
runs_dir = None
device = "auto"
profile = "official"
quick = False
'''

WRITE_OUTPUTS = '''
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from adadf_core import plots
from adadf_core.studies import tables
fig, ax = plt.subplots()
ax.plot([0, 1], [0, 1])
plots.save_figure(fig, output_dir, "{name}_figure")
tables.save_table(pd.DataFrame({{"param": ["{name}"], "value": [{value}]}}), output_dir, "{name}_table")
'''


def write_notebook(path, extra_params="", body=""):
    params = new_code_cell(PARAMS + extra_params)
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture()
def books(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    write_notebook(folder / "01_first.ipynb", "alpha = 1  # a = 1 in a comment\n",
                   WRITE_OUTPUTS.format(name="first", value="alpha"))
    write_notebook(folder / "02_second.ipynb", "beta = [0.1, 0.2]\n",
                   WRITE_OUTPUTS.format(name="second", value="beta[0]"))
    return folder


def test_find_notebooks_and_only(books):
    assert [b.name for b in pipeline_params.find_notebooks(books)] == ["01_first.ipynb", "02_second.ipynb"]
    assert [b.name for b in pipeline_params.find_notebooks(books, "2")] == ["02_second.ipynb"]
    assert [b.name for b in pipeline_params.find_notebooks(books, ["01_first"])] == ["01_first.ipynb"]
    with pytest.raises(pipeline_params.PipelineError, match="--only 05"):
        pipeline_params.find_notebooks(books, "05")


def test_notebook_parameters_parsed_with_comments(books):
    params = pipeline_params.notebook_parameters(books / "01_first.ipynb")
    assert params["alpha"] == "1" and params["output_dir"] == '"results/x"'
    assert list(params)[:2] == ["dataset", "data_root"]


def test_a_parameter_string_becomes_the_python_value_it_spells():
    assert notebook.parameter_value("3") == 3
    assert notebook.parameter_value("[0, 1]") == [0, 1]
    assert notebook.parameter_value("None") is None and notebook.parameter_value("true") is True
    assert notebook.parameter_value('{"lambda_min": [0.1]}') == {"lambda_min": [0.1]}
    assert notebook.parameter_value("cuda:0") == "cuda:0"


def test_misspelled_parameter_is_an_error(books, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(pipeline_params.PipelineError, match="Did you mean alpha"):
        reproduce.reproduce(output=out, notebooks_dir=books, params={"alpah": 2}, progress=False)
    assert not (out / "notebooks").exists()          # nothing ran
    code = reproduce.cli_main(["--notebooks", str(books), "--output", str(out), "-p", "betta", "1"])
    assert code == 2
    assert "no selected notebook has a parameter called 'betta'" in capsys.readouterr().err
    with pytest.raises(pipeline_params.PipelineError, match="--output"):
        reproduce.reproduce(output=out, notebooks_dir=books, params={"output_dir": "x"}, progress=False)


def test_failing_notebook_stops_pipeline(books, tmp_path, capsys):
    write_notebook(books / "02_second.ipynb", "", 'x = 1\nraise ValueError("boom from the test notebook")')
    write_notebook(books / "03_never.ipynb", "", "open(output_dir + '/never_ran', 'w').close()")
    out = tmp_path / "out"
    code = reproduce.cli_main(["--notebooks", str(books), "--output", str(out), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "02_second.ipynb FAILED" in err
    assert 'raise ValueError("boom from the test notebook")' in err      # the cell source
    assert "ValueError: boom from the test notebook" in err
    # the first notebook's outputs stay, the third never ran
    assert (out / "figures" / "first_figure.png").is_file()
    assert (out / "tables" / "first_table.csv").is_file()
    assert (out / "notebooks" / "01_first.ipynb").is_file()
    assert (out / "notebooks" / "02_second.ipynb").is_file()     # kept, with the traceback
    assert not (out / "notebooks" / "03_never.ipynb").exists() and not (out / "never_ran").exists()
    timings = (out / "timings.csv").read_text()
    assert "01_first.ipynb" in timings and ",failed," in timings


def test_index_lists_figures_tables_and_timings(books, tmp_path):
    out = tmp_path / "out"
    result = reproduce.reproduce(output=out, notebooks_dir=books, params={"alpha": 7}, progress=False)
    assert [p.name for p in result.figures] == ["first_figure.png", "second_figure.png"]
    readme = (out / "README.md").read_text()
    assert "![first_figure](figures/first_figure.png)" in readme
    assert "![second_figure](figures/second_figure.png)" in readme
    assert "| first | 7.0000 |" in readme or "| first | 7 |" in readme        # table inline, -p value used
    assert "| second | 0.1000 |" in readme
    assert "cpu_count" in readme and "torch" in readme
    assert "| 01_first.ipynb | ok |" in readme and "| 02_second.ipynb | ok |" in readme
    rows = (out / "timings.csv").read_text().splitlines()
    assert rows[0] == "notebook,seconds,status,finished_at" and len(rows) == 3
    record = json.loads((out / "pipeline.json").read_text())
    assert record["parameters"]["alpha"] == 7 and record["parameters"]["output_dir"] == str(out)
    # provenance: commit, tree state, versions, device, command
    prov = record["provenance"]
    assert {"commit", "dirty", "adadf", "torch", "cuda", "device", "command"} <= set(prov)
    assert "## Provenance" in readme and f"commit: {prov['commit']}" in readme
    # executed notebook holds the injected parameters
    executed = nbformat.read(str(out / "notebooks" / "01_first.ipynb"), as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "alpha = 7" in injected[0].source


def test_other_parameters_refused_unless_force(books, tmp_path):
    out = tmp_path / "out"
    reproduce.reproduce(output=out, notebooks_dir=books, params={"alpha": 1}, progress=False, only="01")
    # same parameters: fine (outputs refreshed in place)
    reproduce.reproduce(output=out, notebooks_dir=books, params={"alpha": 1}, progress=False, only="01")
    with pytest.raises(pipeline_params.PipelineError, match="alpha: 1 -> 2"):
        reproduce.reproduce(output=out, notebooks_dir=books, params={"alpha": 2}, progress=False, only="01")
    assert json.loads((out / "pipeline.json").read_text())["parameters"]["alpha"] == 1
    reproduce.reproduce(output=out, notebooks_dir=books, params={"alpha": 2}, progress=False, only="01",
                       force=True)
    previous = list(out.glob("previous-*"))
    assert len(previous) == 1
    assert json.loads((previous[0] / "pipeline.json").read_text())["parameters"]["alpha"] == 1
    assert (previous[0] / "README.md").is_file() and (previous[0] / "figures" / "first_figure.png").is_file()
    assert json.loads((out / "pipeline.json").read_text())["parameters"]["alpha"] == 2


def test_an_output_folder_moved_to_another_path_is_not_refused(books, tmp_path):
    """A clone at another path holds the committed results with the other machine's paths: the same
    parameters are the same results; a real difference is still refused."""
    import shutil
    out = tmp_path / "here" / "out"
    reproduce.reproduce(output=out, notebooks_dir=books, params={"alpha": 1}, progress=False, only="01")
    moved = tmp_path / "elsewhere" / "out"
    shutil.copytree(out, moved)
    reproduce.reproduce(output=moved, notebooks_dir=books, params={"alpha": 1}, progress=False, only="01")
    with pytest.raises(pipeline_params.PipelineError, match="alpha: 1 -> 3"):
        reproduce.reproduce(output=moved, notebooks_dir=books, params={"alpha": 3}, progress=False, only="01")


def test_budgets_cover_every_dataset_and_quick_keeps_tiny_runs():
    from adadf_core.data.classes import DATASET_NAMES
    assert set(DATASET_NAMES) <= set(budgets.BUDGETS)
    assert budgets.BUDGETS["raf"]["epochs"] == 75
    quick = budgets.budget_for("raf", quick=True)
    assert quick["epochs"] is None and quick["noise_epochs"] is None


def test_synthfer_backbone_token_is_pretrained_once_before_the_notebooks(tmp_path, monkeypatch):
    """The SynthFER budget names the pretrained backbone by a token; the pipeline builds the file once
    (here a stand-in) before the notebooks, as a timed step of its own, and passes the token on (the
    notebooks resolve it to the same file: no machine path reaches an executed notebook). --quick and
    `-p pretrained None` train from scratch."""
    from adadf_core.studies import pretrain

    assert budgets.budget_for("synthfer")["pretrained"] == budgets.SYNTHFER_BACKBONE
    assert budgets.budget_for("synthfer", quick=True)["pretrained"] is None
    folder = tmp_path / "nbs"
    folder.mkdir()
    write_notebook(folder / "01_uses.ipynb", "pretrained = None\n",
                   "from pathlib import Path\nPath(output_dir, 'seen.txt').write_text(repr(pretrained))\n")
    calls = []
    weights = tmp_path / "weights.pth"

    def fake_backbone(**kwargs):
        calls.append(kwargs)
        weights.write_bytes(b"stand-in")
        return weights

    monkeypatch.setattr(pretrain, "synthfer_backbone", fake_backbone)
    monkeypatch.setattr(pretrain, "default_path", lambda: weights)
    out = tmp_path / "out"
    reproduce.reproduce("synthfer", output=out, notebooks_dir=folder, progress=False)
    assert len(calls) == 1
    assert (out / "seen.txt").read_text() == repr(budgets.SYNTHFER_BACKBONE)
    assert "pretrain-synthfer" in (out / "timings.csv").read_text()
    reproduce.reproduce("synthfer", output=tmp_path / "out1", notebooks_dir=folder, progress=False)
    assert len(calls) == 1                                            # the file exists: reused
    reproduce.reproduce("synthfer", output=tmp_path / "out2", notebooks_dir=folder, progress=False,
                       params={"pretrained": None})
    assert len(calls) == 1 and (tmp_path / "out2" / "seen.txt").read_text() == "None"


# ---------------------------------------------------------------------------------------------- issue 10

def test_guard_compares_parameters_left_at_their_defaults(books, tmp_path):
    """A finished output whose 01 ran with its default alpha = 1 refuses `--only 01 -p alpha 5` (the
    1-epoch-02-in-a-2-epoch-folder case); the same value given explicitly is the same run."""
    out = tmp_path / "out"
    reproduce.reproduce(output=out, notebooks_dir=books, progress=False)
    record = json.loads((out / "pipeline.json").read_text())
    assert record["notebook_parameters"]["01_first.ipynb"]["alpha"] == 1          # a default, recorded
    assert record["notebook_parameters"]["02_second.ipynb"]["beta"] == [0.1, 0.2]
    with pytest.raises(pipeline_params.PipelineError, match=r"01_first.ipynb: alpha: 1 -> 5"):
        reproduce.reproduce(output=out, notebooks_dir=books, params={"alpha": 5}, progress=False, only="01")
    reproduce.reproduce(output=out, notebooks_dir=books, params={"alpha": 1}, progress=False, only="01")


def test_no_output_inside_the_reference_and_quick_gets_its_own_folder(books, tmp_path, monkeypatch):
    from adadf_core.pipeline import notebook
    monkeypatch.setattr(reference, "reference_root", lambda: tmp_path / "reference")
    monkeypatch.setattr(notebook, "reference_root", lambda: tmp_path / "reference")
    with pytest.raises(pipeline_params.PipelineError, match="committed reference"):
        reproduce.reproduce(output=tmp_path / "reference" / "synthfer", notebooks_dir=books, progress=False)
    result = reproduce.reproduce(output=tmp_path / "mine", notebooks_dir=books, progress=False, quick=True)
    assert result.output == tmp_path / "mine-quick" and not (tmp_path / "mine").exists()
    assert pipeline_params.default_output("raf", quick=True).name == "raf-quick"


def _reference_from(out, ref):
    import shutil
    shutil.copytree(out / "tables", ref / "tables")
    shutil.copy(out / "pipeline.json", ref / "pipeline.json")


def test_a_rerun_is_compared_with_the_reference(books, tmp_path):
    out, ref = tmp_path / "out", tmp_path / "ref"
    reproduce.reproduce(output=out, notebooks_dir=books, progress=False, compare=False)
    _reference_from(out, ref)
    same = reference.compare_with_reference(out, ref)
    assert same["counts"] == {"identical": 2} and same["parameters"] == []
    assert "first_table | identical" in (out / "reference_comparison.md").read_text()
    changed = tmp_path / "out2"
    reproduce.reproduce(output=changed, notebooks_dir=books, params={"alpha": 3}, progress=False, compare=False)
    diff = reference.compare_with_reference(changed, ref)
    assert diff["tables"]["first_table"][0] == "differs" and "2.0000 in value" in diff["tables"]["first_table"][1]
    assert diff["tables"]["second_table"][0] == "identical"
    assert any("alpha: 1 -> 3" in d for d in diff["parameters"])


def test_a_protocol_card_within_the_reference_intervals_is_not_called_different(tmp_path):
    import pandas as pd
    ref = pd.DataFrame({"method": ["a"], "last_acc": [0.70], "last_acc_lo": [0.66], "last_acc_hi": [0.74]})
    inside = ref.assign(last_acc=0.72, last_acc_lo=0.69, last_acc_hi=0.75)
    outside = ref.assign(last_acc=0.80)
    assert reference._compare_table(ref, ref, 1e-4)[0] == "identical"
    assert reference._compare_table(ref, inside, 1e-4)[0] == "within intervals"
    status, detail = reference._compare_table(ref, outside, 1e-4)
    assert status == "differs" and "last_acc row 0" in detail


def test_promote_refuses_incomplete_quick_or_dirty_runs_and_writes_no_absolute_path(books, tmp_path):
    out = tmp_path / "out"
    reproduce.reproduce(output=out, notebooks_dir=books, progress=False, only="01", compare=False)
    with pytest.raises(pipeline_params.PipelineError, match="not run or not ok: 02_second.ipynb"):
        reference.promote_reference(out, dest=tmp_path / "ref", notebooks_dir=books)
    reproduce.reproduce(output=out, notebooks_dir=books, progress=False, compare=False)
    record = json.loads((out / "pipeline.json").read_text())
    record["provenance"].update(commit="abc123", dirty=True)
    (out / "pipeline.json").write_text(json.dumps(record))
    with pytest.raises(pipeline_params.PipelineError, match="dirty tree"):
        reference.promote_reference(out, dest=tmp_path / "ref", notebooks_dir=books)
    record["provenance"]["dirty"] = False
    (out / "pipeline.json").write_text(json.dumps(record))
    (out / "tables" / "paths.md").write_text(f"see {out}/tables and {notebook.project_root()}/adadf_core\n")
    dest = reference.promote_reference(out, dest=tmp_path / "ref", notebooks_dir=books)
    assert (dest / "figures" / "first_figure.png").is_file() and not (dest / "runs").exists()
    texts = [p.read_text() for p in dest.rglob("*") if p.suffix in (".md", ".json", ".csv", ".ipynb")]
    assert not any(str(tmp_path) in t or str(notebook.project_root()) in t for t in texts)
    assert "adadf_core" in (dest / "tables" / "paths.md").read_text()
    assert reference.compare_with_reference(out, dest)["counts"] == {"identical": 2}


def test_index_states_the_resolution_of_every_protocol_card(tmp_path):
    import pandas as pd
    (tmp_path / "tables").mkdir()
    card = pd.DataFrame({"method": ["baseline", "adadf"], "pairs": [0, 3],
                         **{f"diff_{s}_{e}": [float("nan"), v] for s in ("best_acc", "last_acc", "mean_last_k_acc")
                            for e, v in (("lo", 0.01), ("hi", 0.05))}, "diff_last_acc": [float("nan"), 0.03]})
    card.to_csv(tmp_path / "tables" / "03_ablation.csv", index=False)
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "tables" / "01_other.csv", index=False)
    lines = provenance._resolution_lines(tmp_path)
    assert "| 03_ablation | 3 | ±2.00 | ±2.00 | ±2.00 |" in lines and not any("01_other" in ln for ln in lines)


def test_devices_reach_the_notebook_kernels_and_the_record(books, tmp_path, capsys, monkeypatch):
    """--devices cpu,cpu: the kernels see ADADF_DEVICES (studies.train_many spreads runs over it), the record
    says which devices ran, the caller's environment is left as it was; a bad device is refused up front."""
    monkeypatch.delenv("ADADF_DEVICES", raising=False)
    write_notebook(books / "01_first.ipynb", "", "import os\nopen(output_dir + '/devices', 'w').write("
                   "os.environ.get('ADADF_DEVICES', '<unset>'))")
    out = tmp_path / "out"
    assert reproduce.cli_main(["--notebooks", str(books), "--output", str(out), "--only", "01", "--no-progress",
                              "--devices", "cpu, cpu"]) == 0
    assert (out / "devices").read_text() == "cpu,cpu"
    assert json.loads((out / "pipeline.json").read_text())["provenance"]["devices"] == ["cpu", "cpu"]
    assert "ADADF_DEVICES" not in __import__("os").environ
    assert reproduce.cli_main(["--notebooks", str(books), "--output", str(tmp_path / "b"), "--devices",
                              "cuda:0,gpu1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("adadf reproduce: --devices: 'gpu1' is not a device; expected a comma-separated list of "
                       "cpu, cuda or cuda:N, e.g. cuda:0,cuda:1")
    assert not (tmp_path / "b").exists()
    assert reproduce.cli_main(["--notebooks", str(books), "--output", str(tmp_path / "c"), "--device", "cpu",
                              "--devices", "cuda:0,cuda:1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "adadf reproduce: --device cpu and --devices cuda:0,cuda:1 disagree; expected one of them (the rest of "
        "the work runs on the first of --devices)")
    assert not (tmp_path / "c").exists()


def test_reproduce_says_first_what_it_will_do_and_how_long_the_reference_took(tmp_path):
    from adadf_core.pipeline.notebook import reference_root
    from adadf_core.pipeline.parameters import find_notebooks
    from adadf_core.pipeline.reproduce import plan_line
    books = find_notebooks(None, None)
    out = tmp_path / "results"
    fresh = plan_line("synthfer", books, out, quick=False)
    minutes = pd.read_csv(reference_root() / "synthfer" / "timings.csv")["seconds"].sum() / 60
    assert fresh.startswith(f"adadf reproduce: {len(books)} notebook(s) (00-09) for synthfer into ")
    assert "every run is trained" in fresh and f"the committed reference took {minutes:.0f} min" in fresh
    for name in ("a", "b"):
        (out / "runs" / name).mkdir(parents=True)
        (out / "runs" / name / "summary.json").write_text("{}")
    again = plan_line("synthfer", books[:1], out, quick=False)
    assert "2 finished runs in it are reused" in again and "took" not in again    # one notebook: no total
    assert "\n" not in again


@pytest.mark.parametrize("params, message", [
    ({"epochs": "two"}, r"02_training\.ipynb: epochs='two' is not valid; expected an integer >= 1"),
    ({"seeds": "[0, -1]"}, r"seeds=\[0, -1\] is not valid; expected \"auto\", a seed or a list of seeds"),
    ({"reuse_runs": "no"}, r"-p reuse_runs='no' is not valid; expected true or false"),
    ({"train_overrides": '{"lambda_min": 2}'}, r"lambda_min=2 is not valid"),
])
def test_a_bad_parameter_value_is_refused_before_anything_runs_or_moves(tmp_path, params, message):
    from adadf_core.pipeline.parameters import PipelineError
    from adadf_core.pipeline.reproduce import reproduce
    out = tmp_path / "results"
    out.mkdir()
    (out / "mine.txt").write_text("kept")
    values = {k: notebook.parameter_value(v) for k, v in params.items()}       # as `adadf reproduce -p` reads them
    with pytest.raises(PipelineError, match=message):
        reproduce(dataset="synthfer", output=out, params=values, force=True, compare=False, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]                  # nothing moved aside or written


def test_ctrl_c_during_a_notebook_is_one_line_and_the_index_says_interrupted(tmp_path, monkeypatch, capsys):
    from adadf_core.pipeline import reproduce as rep
    calls = []

    def execute(src, dst, **kwargs):
        calls.append(Path(src).name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        Path(dst).write_text(Path(src).read_text())

    monkeypatch.setattr(rep.papermill, "execute_notebook", execute)
    monkeypatch.setattr(rep, "_pretrain_if_asked", lambda *a, **k: None)
    out = tmp_path / "results"
    code = rep.cli_main(["--dataset", "synthfer", "--output", str(out), "--only", "00,01,02", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 130 and len(calls) == 2
    line = [x for x in err.splitlines() if x.startswith("adadf reproduce:")]
    assert line == [f"adadf reproduce: interrupted during {calls[1]}; the index ({out / 'README.md'}) says so. "
                    "Run the same command again to continue: finished runs are reused"] and "Traceback" not in err
    timings = pd.read_csv(out / "timings.csv").set_index("notebook")["status"].to_dict()
    assert timings == {calls[0]: "ok", calls[1]: "interrupted"}
    assert f"| {calls[1]} | interrupted |" in (out / "README.md").read_text()


def test_a_backbone_other_than_the_reference_s_is_named_first_in_the_comparison(tmp_path):
    def results(name, sha):
        folder = tmp_path / name
        (folder / "tables").mkdir(parents=True)
        pd.DataFrame({"acc": [0.5]}).to_csv(folder / "tables" / "t.csv", index=False)
        (folder / "pipeline.json").write_text(json.dumps({"dataset": "synthfer", "synthfer_backbone_sha256": sha}))
        return folder
    ref, same, other = results("ref", "a" * 64), results("same", "a" * 64), results("other", "b" * 64)
    assert reference.compare_with_reference(same, reference=ref)["backbone"] == ""
    found = reference.compare_with_reference(other, reference=ref)
    assert found["backbone"].startswith("Your SynthFER backbone (sha256 bbbbbbbbbbbb) is not the reference's")
    assert found["backbone"] in (other / "reference_comparison.md").read_text()


def test_synthfer_runs_go_one_single_thread_process_per_core(monkeypatch):
    """Without CUDA, SynthFER's runs are spread over one process per core (at most MAX_CPU_WORKERS); the
    preset pins one thread a run, so the numbers do not depend on how many there are."""
    import torch

    from adadf_core.config import PRESETS
    from adadf_core.pipeline.reproduce import MAX_CPU_WORKERS, cpu_workers

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for cores, expected in ((1, []), (2, ["cpu", "cpu"]), (64, ["cpu"] * MAX_CPU_WORKERS)):
        monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
        assert cpu_workers("auto") == expected
    assert cpu_workers("cuda:0") == []
    assert PRESETS["synthfer"]["num_threads"] == 1
