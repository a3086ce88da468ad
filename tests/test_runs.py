"""runs: the folder's name, the decision fresh / resume / done, the epoch-commit journal, and reading folders back.

Training through these paths (lock held by a live run, a killed epoch, damaged files) is in tests/test_trust.py and
tests/test_train.py; here each piece is driven directly on hand-made folders.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from adadf_core.config import make_config, resolve_config
from adadf_core.runs.lock import JOURNAL, recover, RunExistsError, STAGING
from adadf_core.runs.naming import config_overrides, default_run_dir, run_dir_for, run_dir_for_config
from adadf_core.runs.opening import check_run_dir, open_run_dir
from adadf_core.runs.reader import is_finished, list_runs, NotARunError, resumable, Run


# ------------------------------------------------------------------------------------------------ naming
def test_a_name_lists_the_overrides_sorted_by_tag_with_floats_and_paths_short():
    name = run_dir_for("runs", "adadf", 2, threshold=0.5, lambda_min=0.10, noise_file="/data/noise/raf_0.3.txt",
                       detach_target=True, epochs=None).name
    assert name == "adadf-detach_targeton-lmin0.1-nfileraf_0.3-t0.5-seed2"
    assert run_dir_for("runs/raf", "baseline", 0) == Path("runs/raf/baseline-seed0")
    with pytest.raises(ValueError, match="method 'ada df' is not a valid run-name part"):
        run_dir_for("runs", "ada df", 0)


def test_a_config_is_named_by_what_differs_from_its_preset_and_not_by_machinery():
    base = resolve_config(make_config("raf", method="adadf", seed=1))
    assert config_overrides(base) == {}
    busy = dataclasses.replace(base, num_threads=1, device="cpu", progress=False, run_dir="x")
    assert run_dir_for_config("r", busy) == Path("r/adadf-seed1")
    changed = dataclasses.replace(base, noise_rate=0.2)
    assert run_dir_for_config("r", changed) == Path("r/adadf-noise0.2-seed1")
    paper = resolve_config(make_config("raf", "paper", method="adadf", seed=1))
    assert config_overrides(paper) == {"profile": "paper"}   # its switches follow from the profile
    assert default_run_dir(paper) == Path("runs/raf/adadf-paper-seed1")


# ------------------------------------------------------------------------------- fresh / resume / done
def _run_folder(path: Path, cfg, finished: bool, checkpoint: bool = False) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"config": dataclasses.asdict(cfg)}))
    (path / "summary.json").write_text(json.dumps({"finished": finished}))
    (path / "metrics.csv").write_text("epoch,test_acc\n1,0.5\n")
    if checkpoint:
        (path / "checkpoint.pt").write_bytes(b"stand-in: check_run_dir looks at its presence only")
    return path


def test_the_folder_decides_fresh_resume_or_done(tmp_path):
    cfg = resolve_config(make_config("synthfer"))
    assert check_run_dir(cfg, tmp_path / "new") == ("fresh", None)
    (tmp_path / "dots").mkdir()
    (tmp_path / "dots" / ".lock").write_text("")
    assert check_run_dir(cfg, tmp_path / "dots")[0] == "fresh"          # bookkeeping files do not count

    unfinished = _run_folder(tmp_path / "unfinished", cfg, finished=False, checkpoint=True)
    with pytest.raises(RunExistsError, match="unfinished run.*--resume"):
        check_run_dir(cfg, unfinished)
    assert check_run_dir(dataclasses.replace(cfg, resume=True), unfinished)[0] == "resume"

    done = _run_folder(tmp_path / "done", cfg, finished=True)
    with pytest.raises(RunExistsError, match="already holds a finished run"):
        check_run_dir(cfg, done)
    state, run = check_run_dir(dataclasses.replace(cfg, reuse=True), done)
    assert state == "done" and run.path == done
    with pytest.raises(RunExistsError, match="different config.*lr: 0.001 != 0.01"):
        check_run_dir(dataclasses.replace(cfg, reuse=True, lr=0.01), done)

    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "notes.txt").write_text("mine")
    with pytest.raises(RunExistsError, match="not a run folder .*no config.json"):
        check_run_dir(cfg, tmp_path / "stranger")
    assert (tmp_path / "stranger" / "notes.txt").read_text() == "mine"


def test_opening_a_folder_finishes_a_journalled_epoch_and_drops_an_unjournalled_one(tmp_path):
    cfg = resolve_config(make_config("synthfer"))
    journalled = tmp_path / "journalled"
    (journalled / STAGING).mkdir(parents=True)
    (journalled / STAGING / "metrics.csv").write_text("epoch 2")
    (journalled / "metrics.csv").write_text("epoch 1")
    (journalled / "old.npy").write_text("to delete")
    (journalled / JOURNAL).write_text(json.dumps({"files": ["metrics.csv"], "delete": ["old.npy"]}))
    run_dir, lock = open_run_dir(dataclasses.replace(cfg, run_dir=str(journalled)))
    lock.release()
    assert (run_dir / "metrics.csv").read_text() == "epoch 2"
    assert not (run_dir / "old.npy").exists() and not (run_dir / JOURNAL).exists()
    assert not (run_dir / STAGING).exists()

    torn = tmp_path / "torn"
    (torn / STAGING).mkdir(parents=True)
    (torn / STAGING / "metrics.csv").write_text("half of epoch 2")
    (torn / "metrics.csv").write_text("epoch 1")
    assert recover(torn) == "dropped an epoch that was interrupted while being written"
    assert (torn / "metrics.csv").read_text() == "epoch 1" and recover(torn) is None


# ------------------------------------------------------------------------------------------- reading
def test_finished_and_resumable_and_listing(tmp_path):
    cfg = resolve_config(make_config("synthfer"))
    a = _run_folder(tmp_path / "study" / "a", cfg, finished=True)
    b = _run_folder(tmp_path / "study" / "sub" / "b", cfg, finished=False, checkpoint=True)
    (tmp_path / "study" / "b-damaged").mkdir()
    (tmp_path / "study" / "b-damaged" / "summary.json").write_text("{not json")
    assert is_finished(a) and not resumable(a)
    assert resumable(b) and not is_finished(b)
    assert not is_finished(tmp_path / "study" / "b-damaged")           # damaged summary: not finished
    assert [r.path for r in list_runs(tmp_path / "study")] == [a, b]
    assert list_runs(tmp_path / "nowhere") == []
    run = Run(a)
    assert run.config == cfg and run.metrics["test_acc"].tolist() == [0.5]


def test_reading_a_folder_that_is_not_a_run_says_why(tmp_path):
    with pytest.raises(NotARunError, match="does not exist"):
        Run(tmp_path / "missing")
    with pytest.raises(NotARunError, match="no config.json"):
        Run(tmp_path)


def test_a_run_that_fails_before_writing_leaves_no_folder_but_an_existing_folder_stays(tmp_path):
    from adadf_core.engine.train import fit
    missing = tmp_path / "no-such-data"
    for run_dir, existed in ((tmp_path / "runs" / "new", False), (tmp_path / "mine", True)):
        if existed:
            run_dir.mkdir()
        cfg = make_config("synthfer", data_root=str(missing), run_dir=str(run_dir), progress=False, device="cpu")
        with pytest.raises((FileNotFoundError, ValueError)):
            fit(cfg)
        assert run_dir.is_dir() == existed, run_dir              # no empty folder holding only .lock behind
        if existed:
            assert [p.name for p in run_dir.iterdir()] in ([], [".lock"])


def test_resume_on_a_finished_run_says_there_is_nothing_to_resume(tmp_path, capsys):
    from adadf_core.engine.train import fit
    cfg = resolve_config(make_config("synthfer"))
    done = _run_folder(tmp_path / "done", cfg, finished=True)
    run = fit(dataclasses.replace(cfg, run_dir=str(done), resume=True, device="cpu"))
    assert run.path == done and f"{done} is already finished: nothing to resume" in capsys.readouterr().out
