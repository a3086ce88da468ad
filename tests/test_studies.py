"""studies.py (and the naming rule, tables and notebook set-up it uses) with a fake ``train.fit`` that writes tiny finished run folders (no training)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adadf_core import plots
from adadf_core.pipeline import budgets, notebook
from adadf_core.runs import naming
from adadf_core.studies import experiments as studies, tables
from adadf_core.config import make_config, resolve_config
from adadf_core.runs.reader import Run

ACC = {"baseline": 0.50, "cd_only": 0.55, "ld_only": 0.60, "adadf": 0.65, "scn": 0.58, "slm_aea": 0.57}


@pytest.fixture()
def fake_fit(monkeypatch):
    """Replace train.fit: accuracy = ACC[method] + seed/100 - noise/2 + 0.01*lambda_min; records calls."""
    import adadf_core.engine.train as train

    calls = []

    def fit(cfg):
        cfg = resolve_config(cfg)
        path = Path(cfg.run_dir)
        if (path / "summary.json").is_file():
            assert cfg.reuse, "a finished run would be overwritten"
            return Run(path)
        calls.append(cfg)
        path.mkdir(parents=True)
        (path / "config.json").write_text(json.dumps({"config": dataclasses.asdict(cfg)}))
        best = ACC[cfg.method] + cfg.seed / 100 - cfg.noise_rate / 2 + 0.01 * cfg.lambda_min
        last = best - 0.02
        rows = [dict(epoch=e, test_acc=best if e == 1 else last, train_acc=0.9 - cfg.noise_rate / 4 + 0.05 * e,
                     recovered_flipped=(0.1 * e if cfg.noise_rate > 0 and cfg.method == "adadf" else np.nan))
                for e in (1, 2)]
        pd.DataFrame(rows).to_csv(path / "metrics.csv", index=False)
        (path / "summary.json").write_text(json.dumps(dict(
            finished=True, best_acc=best, best_epoch=1, last_acc=last, last_epoch=2, method=cfg.method,
            dataset=cfg.dataset, seconds=0.1, class_names=["a", "b"])))
        return Run(path)

    monkeypatch.setattr(train, "fit", fit)
    return calls


def base(**kw):
    return make_config("synthfer", **kw)


# ---------------------------------------------------------------------------------------------- naming

def test_run_dir_for_names(tmp_path):
    assert naming.run_dir_for(tmp_path, "adadf", 0) == tmp_path / "adadf-seed0"
    assert naming.run_dir_for(tmp_path, "adadf", 2, threshold=0.6, lambda_min=0.1, noise_rate=None).name \
        == "adadf-lmin0.1-t0.6-seed2"
    assert naming.run_dir_for(tmp_path, "scn", 0, noise_file="/x/y/noise01.txt").name == "scn-nfilenoise01-seed0"
    with pytest.raises(ValueError):
        naming.run_dir_for(tmp_path, "ada/df", 0)


def test_run_dir_for_config_uses_differences_from_preset(tmp_path):
    assert naming.run_dir_for_config(tmp_path, base()).name == "adadf-seed0"
    assert naming.run_dir_for_config(tmp_path, base(method="baseline", seed=3)).name == "baseline-seed3"
    assert naming.run_dir_for_config(tmp_path, base(lambda_min=0.1, noise_rate=0.2)).name \
        == "adadf-lmin0.1-noise0.2-seed0"
    # setting the preset's own value, or machinery, does not change the name
    assert naming.run_dir_for_config(tmp_path, base(threshold=0.7, device="cpu", progress=False)).name \
        == "adadf-seed0"
    assert naming.run_dir_for_config(tmp_path, base(profile="paper")).name == "adadf-paper-seed0"
    # a resolved config names the same folder as the unresolved one
    assert naming.run_dir_for_config(tmp_path, resolve_config(base(epochs=5))).name == "adadf-ep5-seed0"


# ---------------------------------------------------------------------------------------------- studies

def test_ablation_table_rows_stats_and_paper(tmp_path, fake_fit):
    table = studies.ablation_study(base(), [0, 1], tmp_path)
    assert list(table.index) == ["baseline", "cd_only", "ld_only", "adadf"]
    assert len(fake_fit) == 8
    row = table.loc["adadf"]
    assert row["runs"] == 2
    assert row["best_acc"] == pytest.approx(0.655 + 0.002)
    assert row["best_acc_std"] == pytest.approx(np.std([0.652, 0.662], ddof=1))
    assert row["last_acc"] == pytest.approx(row["best_acc"] - 0.02)
    assert row["best"].startswith(f"{100 * row['best_acc']:.2f} ± {100 * row['best_acc_std']:.2f} [")
    assert row["seeds"] == "0,1" and row["pairs"] == 2
    # the fake runs give every variant the same seed effect: the paired difference has no spread
    assert row["diff_last_acc"] == pytest.approx(0.15) and row["diff_last_acc_lo"] == pytest.approx(0.15)
    assert row["mean_last_k_acc"] == pytest.approx(row["best_acc"] - 0.01)    # mean of epochs 1 and 2
    assert row["paper_best_acc"] == pytest.approx(0.9004)
    assert "RAF-DB" in row["paper_source"] and "SynthFER has no paper numbers" in row["paper_source"]
    # a second call reuses every finished run
    again = studies.ablation_study(base(), [0, 1], tmp_path)
    assert len(fake_fit) == 8
    pd.testing.assert_frame_equal(table, again)
    assert (tmp_path / "adadf-seed0").is_dir() and (tmp_path / "baseline-seed1").is_dir()


def test_ablation_headline_on_more_seeds_than_the_variants(tmp_path, fake_fit):
    """The baseline and Ada-DF (the headline) on ``seeds``, cd_only and ld_only on ``variant_seeds``; each
    variant is paired with the baseline over the seeds they share."""
    table = studies.ablation_study(base(), [0, 1, 2, 3], tmp_path, variant_seeds=[0, 1])
    assert len(fake_fit) == 4 + 2 + 2 + 4
    assert table.loc["adadf", "seeds"] == "0,1,2,3" and table.loc["adadf", "pairs"] == 4
    assert table.loc["cd_only", "seeds"] == "0,1" and table.loc["cd_only", "pairs"] == 2
    assert sorted({c.seed for c in fake_fit if c.method == "ld_only"}) == [0, 1]


def test_ablation_one_seed_has_no_std(tmp_path, fake_fit):
    table = studies.ablation_study(base(), [0], tmp_path)
    assert table["best_acc_std"].isna().all()
    assert table.loc["baseline", "best"] == "50.20"


def test_sensitivity_shares_the_preset_point(tmp_path, fake_fit):
    grid = {"lambda_min": [0.0, 0.2], "threshold": [0.6, 0.7]}
    table = studies.sensitivity_study(base(), grid, tmp_path)
    assert len(table) == 4
    assert len(fake_fit) == 3                    # lambda_min=0.2 and threshold=0.7 are the same run
    assert table["is_base"].tolist() == [False, True, False, True]
    lm = table[table["param"] == "lambda_min"].set_index("value")["best_acc"]
    assert lm[0.2] - lm[0.0] == pytest.approx(0.002)
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        studies.sensitivity_study(base(), {"lamda_min": [0.1]}, tmp_path)


def test_noise_study_table(tmp_path, fake_fit):
    labels = tmp_path / "noise01.txt"
    labels.write_text("train_00001.jpg 1\n")
    table = studies.noise_study(base(), [0.0, 0.2], ["baseline", "adadf"], runs_root=tmp_path / "runs",
                                noise_files=[labels])
    assert len(table) == 6
    row = table[(table["method"] == "adadf") & (table["noise"] == "0.2")].iloc[0]
    assert row["best_acc"] == pytest.approx(0.65 + 0.002 - 0.1)
    assert row["recovered_flipped"] == pytest.approx(0.2)     # the last epoch's value
    assert row["train_acc"] == pytest.approx(0.95) and row["clean_share"] == pytest.approx(0.8)
    curves = pd.DataFrame(table.attrs["curves"])
    assert len(curves) == 6 and curves["train"].iloc[-1] == pytest.approx([0.95, 1.0])   # a clean run: 0.9 + 0.05 e
    fig = plots.noise_curves(table)
    assert len(fig.axes) == 2                                 # one panel per numeric rate (0 and 0.2)
    assert row["paper_acc"] == pytest.approx(0.8667)
    assert np.isnan(table[(table["method"] == "baseline") & (table["noise"] == "0.2")]["recovered_flipped"].iloc[0])
    assert set(table["noise"]) == {"0", "0.2", "noise01"}
    assert (tmp_path / "runs" / "adadf-noise0.2-seed0").is_dir()
    assert (tmp_path / "runs" / "baseline-nfilenoise01-seed0").is_dir()
    with pytest.raises(FileNotFoundError):
        studies.noise_study(base(), [0.1], ["adadf"], runs_root=tmp_path, noise_files=[tmp_path / "nope.txt"])


def test_noise_study_draws_the_noise_with_each_seed(tmp_path, fake_fit):
    """Each seed's noisy runs flip their own labels (noise_seed = seed), so the intervals cover the draw;
    the clean runs keep the config of Table 2's runs (and so their folders), whatever the seed."""
    studies.noise_study(base(), [0.0, 0.3], ["adadf"], seeds=[0, 2], runs_root=tmp_path / "runs")
    drawn = {(c.noise_rate, c.seed): c.noise_seed for c in fake_fit}
    assert drawn == {(0.0, 0): 0, (0.0, 2): 0, (0.3, 0): 0, (0.3, 2): 2}
    assert (tmp_path / "runs" / "adadf-seed2").is_dir()
    assert (tmp_path / "runs" / "adadf-noise0.3-nseed2-seed2").is_dir()


def test_unavailable_method_fails_loudly(tmp_path, fake_fit):
    with pytest.raises(ValueError, match="unknown method 'rul'"):
        studies.noise_study(base(), [0.0], ["baseline", "rul"], runs_root=tmp_path)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        studies.ablation_study(base(), [0], tmp_path, methods=["baseline", "nope"])
    assert fake_fit == []                        # checked before anything trains


def test_train_or_reuse_moves_finished_run_aside(tmp_path, fake_fit):
    cfg = base()
    first = studies.train_or_reuse(cfg, tmp_path)
    assert first.path == tmp_path / "adadf-seed0" and len(fake_fit) == 1
    studies.train_or_reuse(cfg, tmp_path)
    assert len(fake_fit) == 1
    studies.train_or_reuse(cfg, tmp_path, reuse=False)
    assert len(fake_fit) == 2
    assert len(list(tmp_path.glob("adadf-seed0.replaced-*"))) == 1
    with pytest.raises(ValueError, match="runs_root"):
        studies.train_or_reuse(cfg)


# ---------------------------------------------------------------------------------------------- tables

def test_results_and_save_table(tmp_path, fake_fit):
    runs = [studies.train_or_reuse(base(method=m), tmp_path / "runs") for m in ("baseline", "adadf")]
    df = studies.results_table(runs)
    assert df["method"].tolist() == ["baseline", "adadf"]
    assert df["best_acc"].tolist() == pytest.approx([0.502, 0.652])
    paths = tables.save_table(df[["method", "best_acc"]], tmp_path, "t1")
    assert paths["csv"] == tmp_path / "tables" / "t1.csv"
    back = pd.read_csv(paths["csv"])
    assert back["best_acc"].tolist() == pytest.approx([0.502, 0.652])
    md = paths["md"].read_text().splitlines()
    assert md[0] == "| method | best_acc |" and md[2] == "| baseline | 0.5020 |"
    indexed = tables.save_table(df.set_index("method")[["best_acc"]], tmp_path, "t2")
    assert pd.read_csv(indexed["csv"]).columns.tolist() == ["method", "best_acc"]


def test_notebook_setup_quick(tmp_path):
    ctx = notebook.setup(output_dir=str(tmp_path / "out"), quick=True, seeds=[3, 4], device="cpu")
    # quick results always go to a folder of their own
    assert ctx.runs_root == tmp_path / "out-quick" / "runs" and ctx.figures_dir.is_dir() and ctx.tables_dir.is_dir()
    for k, v in budgets.QUICK_RUN.items():
        assert getattr(ctx.base_cfg, k) == v
    assert ctx.base_cfg.seed == 3 and ctx.base_cfg.device == "cpu"
    assert Path(ctx.cfg("baseline", seed=4).run_dir).parent == ctx.runs_root
    assert ctx.variant(epochs=None, max_train_samples=50).max_train_samples == 50
    rel = notebook.setup(output_dir="results/_test_rel", runs_dir=str(tmp_path / "r"), pretrained=None)
    assert rel.output_dir == notebook.project_root() / "results" / "_test_rel"
    import shutil
    shutil.rmtree(rel.output_dir)
    with pytest.raises(ValueError):
        notebook.setup(output_dir=str(tmp_path / "o"), profile="papers")
