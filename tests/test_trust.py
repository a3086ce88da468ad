"""Trust the run folder: no code runs from a file a user is handed, one run per folder, no broken checkpoint
called good, and a one-line error naming the file for every damaged input (issue 13's cases)."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from adadf_core.utils import checkpoints
from adadf_core import cli
from adadf_core.utils.checkpoints import UnsafeCheckpointError
from adadf_core.config import make_config, resolve_config
from adadf_core.utils.fileio import clean_stale_temporaries
from adadf_core.methods.adadf import AdaDFMethod
from adadf_core.models.networks import PretrainedLoadError, build_model, make_resnet
from adadf_core.runs.writer import DiskFullError
from adadf_core.runs.reader import Run
from adadf_core.runs.lock import RunExistsError, RunLock, RunLockedError
from adadf_core.engine.train import NonFiniteLossError, TrainingInterrupted, fit

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this creates a marker file (harmless stand-in for code a file could run)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def tiny(root, run_dir, **kw):
    base = dict(data_root=str(root), run_dir=str(run_dir), image_size=32, recipe="light", batch_size=16,
                epochs=2, max_train_samples=32, max_test_samples=16, progress=False, num_workers=0,
                track_samples=4, seed=3, device="cpu")
    base.update(kw)
    return make_config("synthfer", "official", **base)


def one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    return lines[0]


@pytest.fixture(scope="module")
def finished(tiny_synthfer, tmp_path_factory):
    """An Ada-DF run stopped after epoch 1 of 2: its folder has checkpoint.pt and best_model.pt (a finished
    run keeps safetensors instead). Module-wide; tests copy it before damaging anything."""
    import shutil
    run_dir = tmp_path_factory.mktemp("trust") / "run"
    yield fit(tiny(tiny_synthfer, run_dir), stop_after_epoch=1)
    shutil.rmtree(run_dir.parent, ignore_errors=True)


def copy_run(run: Run, dst: Path) -> Path:
    import shutil
    shutil.copytree(run.path, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


# ----------------------------------------------------------------------------------------- security
def test_state_round_trip_is_exact_and_code_free(tmp_path):
    rng = np.random.RandomState(5).get_state()
    state = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "rng": rng, "t": torch.ones(2),
             "rows": [{"x": 1.5, "y": "s"}], "empty": np.zeros((0, 3))}
    checkpoints.save(tmp_path / "s.pt", state)
    back = checkpoints.load(tmp_path / "s.pt")
    assert np.array_equal(back["a"], state["a"]) and back["a"].dtype == np.float32 and back["a"].shape == (2, 3)
    assert back["rng"][0] == "MT19937" and np.array_equal(back["rng"][1], rng[1]) and back["rng"][2:] == rng[2:]
    assert back["empty"].shape == (0, 3) and torch.equal(back["t"], state["t"]) and back["rows"] == state["rows"]
    np.random.set_state(back["rng"])                      # numpy accepts the restored state as it is


def _evil(path: Path, marker: Path, content: dict) -> Path:
    torch.save({**content, "extra": Payload(marker)}, path)
    return path


def test_no_load_path_runs_code_from_a_file(finished, tmp_path, capsys):
    marker = tmp_path / "PAYLOAD_RAN"
    resnet_state = make_resnet("resnet18").state_dict()
    # 1. --pretrained: refused with the reason and the way out, and nothing ran
    evil_weights = _evil(tmp_path / "weights.pth", marker, {"state_dict": resnet_state})
    with pytest.raises(PretrainedLoadError, match="refused to load pretrained weights .*--trust-pickle"):
        build_model("single", 7, pretrained=evil_weights)
    # 2. checkpoint.pt on resume
    run_dir = copy_run(finished, tmp_path / "resume")
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    _evil(run_dir / "checkpoint.pt", marker, ckpt)
    with pytest.raises(UnsafeCheckpointError, match="checkpoint.pt: .*would run code"):
        fit(tiny(finished.config.data_root, run_dir, resume=True))
    # 3./4. best_model.pt and checkpoint.pt in Run.load_model and adadf evaluate
    _evil(run_dir / "best_model.pt", marker, {"model": finished.load_model(best=True).state_dict()})
    for best in (True, False):
        with pytest.raises(UnsafeCheckpointError):
            Run(run_dir).load_model(best=best)
        assert cli.main(["evaluate", str(run_dir)] + (["--best"] if best else [])) == 2
        assert "--trust-pickle" in one_line(capsys.readouterr().err)
    assert not marker.exists(), "a load ran code stored in the file"
    # the explicit flag is the only way in (and then the file's code does run: that is what trust means)
    build_model("single", 7, pretrained=evil_weights, trust_pickle=True)
    assert marker.exists()


def test_pretrained_weights_never_fall_back_to_unpickling_by_themselves(tmp_path):
    path = tmp_path / "np_inside.pth"
    torch.save({"state_dict": make_resnet().state_dict(), "meta": np.float64(1.0)}, path)
    with pytest.raises(PretrainedLoadError, match="refused"):
        build_model("adadf", 7, pretrained=path)


# ------------------------------------------------------------------------------- one run per folder
@pytest.mark.slow
def test_two_trainings_into_one_folder_the_second_is_refused(tiny_synthfer, tmp_path):
    run_dir = tmp_path / "shared"
    args = ["-m", "adadf_core.cli", "train", "--data-root", str(tiny_synthfer), "--run-dir", str(run_dir),
            "--epochs", "2", "--set", "image_size=32", "--set", "recipe=light", "--set", "batch_size=16",
            "--set", "max_train_samples=48", "--set", "max_test_samples=16", "--set", "progress=false"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, *args, "--set", "lr=0.001", "--set", "epochs=8"], env=env, stderr=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run_dir / ".lock").exists() or not (run_dir / ".lock").read_text():
        assert time.time() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.2)
    second = subprocess.run([sys.executable, *args, "--set", "lr=0.01"], env=env, capture_output=True, text=True)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert second.returncode == 2
    line = one_line(second.stderr)
    assert "being written by another training process" in line and f"pid {first.pid}" in line
    assert json.loads((run_dir / "config.json").read_text())["config"]["lr"] == 0.001
    assert Run(run_dir).finished


def test_lock_is_exclusive_and_released(tmp_path):
    held = RunLock(tmp_path)
    held.acquire()
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    held.release()
    again = RunLock(tmp_path)
    assert again.acquire() and (again.release() is None)


# ------------------------------------------------------------------- no broken checkpoint called good
def _poison_last_step(monkeypatch, epoch_to_poison=2):
    original = AdaDFMethod.after_optimizer_step
    state = {"steps": 0}

    def poisoned(self, model):
        original(self, model)
        state["steps"] += 1
        if state["steps"] == 2 * epoch_to_poison:           # 2 steps per epoch: the epoch's last step
            with torch.no_grad():
                model.branch2.fc.weight[0, 0] = float("inf")
    monkeypatch.setattr(AdaDFMethod, "after_optimizer_step", poisoned)


def test_a_weight_that_turns_inf_is_never_checkpointed(tiny_synthfer, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "inf"
    _poison_last_step(monkeypatch)
    with pytest.raises(NonFiniteLossError, match=r"weights became NaN or infinite in epoch 2 .*branch2.fc.weight"
                                                 r".*keeps epoch 1"):
        fit(tiny(tiny_synthfer, run_dir, max_train_samples=32))
    run = Run(run_dir)
    assert len(run.metrics) == 1 and run.summary["last_epoch"] == 1 and not run.finished
    assert checkpoints.load(run_dir / "checkpoint.pt")["epoch"] == 1
    assert not checkpoints.non_finite(run.load_model().state_dict())
    assert cli.main(["evaluate", str(run_dir)]) == 0
    capsys.readouterr()
    # a weights file with an inf (written by hand) is refused, not evaluated
    state = run.load_model().state_dict()
    state["branch2.fc.weight"][0, 0] = float("nan")
    checkpoints.save(run_dir / "best_model.pt", {"model": state, "epoch": 1, "acc": 0.5})
    assert cli.main(["evaluate", str(run_dir), "--best"]) == 2
    assert "NaN or infinite weights" in one_line(capsys.readouterr().err)


def test_resume_of_a_folder_without_checkpoint_is_an_error(tiny_synthfer, tmp_path, capsys):
    typo = tmp_path / "runs" / "adadf-sed0"
    assert cli.main(["train", "--data-root", str(tiny_synthfer), "--run-dir", str(typo), "--resume"]) == 2
    assert "nothing to resume" in one_line(capsys.readouterr().err)
    assert not typo.exists()                           # nothing was created for the mistyped folder
    typo.mkdir(parents=True)                           # an empty folder: still nothing to resume
    with pytest.raises(RunExistsError, match="nothing to resume"):
        fit(tiny(tiny_synthfer, typo, resume=True))


@pytest.mark.parametrize("field,value", [("lr_gamma", 0.0), ("lr_gamma", -0.5), ("lr_gamma", 1.5),
                                         ("lr", float("inf")), ("lr", float("nan")), ("lr", -1e-3),
                                         ("weight_decay", -1.0), ("rr_ratio", 1.0), ("epochs", 0),
                                         ("max_train_samples", 0), ("slm_p", 1.0), ("num_workers", -1)])
def test_numeric_fields_out_of_range_are_refused(field, value):
    with pytest.raises(ValueError, match=rf"^{field}={value!r} is not valid; expected"):
        resolve_config(make_config("synthfer", **{field: value}))


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".checkpoint.pt.{dead}.tmp"
    stale.write_bytes(b"x" * 1000)
    live = tmp_path / f".checkpoint.pt.{os.getppid()}.tmp"
    live.write_bytes(b"y")
    (tmp_path / ".staging").mkdir()
    staged = tmp_path / ".staging" / f".metrics.csv.{dead}.tmp"
    staged.write_text("z")
    removed = clean_stale_temporaries(tmp_path)
    assert set(removed) == {stale, staged} and live.exists() and not stale.exists()


def test_an_epoch_is_written_whole_or_not_at_all(finished, tiny_synthfer, tmp_path, monkeypatch):
    """Ctrl-C while the epoch's files are staged: the folder stays at epoch 1. Ctrl-C in the middle of the
    commit: the next reader finishes it, and every file says epoch 2."""
    from adadf_core.runs import lock

    cfg = tiny(tiny_synthfer, tmp_path / "a")
    fit(cfg, stop_after_epoch=1)
    original = checkpoints.save

    def interrupt_on_checkpoint(path, obj):
        if Path(path).name == "checkpoint.pt":
            raise KeyboardInterrupt
        original(path, obj)
    monkeypatch.setattr(checkpoints, "save", interrupt_on_checkpoint)
    with pytest.raises(TrainingInterrupted, match=r"epoch 2, step 2 .*keeps 1 finished epoch.*--resume"):
        fit(tiny(tiny_synthfer, tmp_path / "a", resume=True))
    monkeypatch.setattr(checkpoints, "save", original)
    run = Run(tmp_path / "a")
    assert len(run.metrics) == 1 and run.summary["last_epoch"] == 1
    assert checkpoints.load(run.path / "checkpoint.pt")["epoch"] == 1
    assert not (run.path / ".staging").exists()

    # interrupted after two of the staged files were moved in
    moves = {"n": 0}
    real_replace = os.replace

    def flaky_replace(src, dst):
        if Path(src).parent.name == lock.STAGING and Path(dst).parent.name != lock.STAGING:   # a commit move
            moves["n"] += 1
            if moves["n"] == 3:
                raise KeyboardInterrupt
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(TrainingInterrupted):
        fit(tiny(tiny_synthfer, tmp_path / "a", resume=True))
    monkeypatch.setattr(os, "replace", real_replace)
    assert (tmp_path / "a" / lock.JOURNAL).exists()        # a half-done commit is on disk
    run = Run(tmp_path / "a")                               # a reader completes it
    assert not (run.path / lock.JOURNAL).exists()
    assert len(run.metrics) == 2 and run.summary["last_epoch"] == 2 and run.finished
    assert checkpoints.load(run.path / "checkpoint.pt")["epoch"] == 2


# ------------------------------------------------------------------------------ one-line errors
@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_damaged_checkpoint_and_best_model_are_one_line_errors(finished, tmp_path, capsys, damage):
    run_dir = copy_run(finished, tmp_path / damage)
    for name in ("checkpoint.pt", "best_model.pt"):
        data = (run_dir / name).read_bytes()
        (run_dir / name).write_bytes({"empty": b"", "truncated": data[: len(data) // 2],
                                      "garbage": b"not a checkpoint at all\n" * 50}[damage])
    code = cli.main(["train", "--data-root", str(finished.config.data_root), "--run-dir", str(run_dir),
                     "--resume", "--epochs", "2", "--set", "image_size=32", "--set", "recipe=light",
                     "--set", "batch_size=16", "--set", "max_train_samples=32", "--set", "max_test_samples=16",
                     "--set", "track_samples=4", "--seed", "3", "--set", "progress=false", "--set", "device=cpu"])
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert "checkpoint.pt" in line and ("empty" in line or "truncated or not a torch checkpoint" in line)
    assert cli.main(["evaluate", str(run_dir), "--best"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "best_model.pt" in line and ("empty" in line or "truncated or not a torch checkpoint" in line)


def test_damaged_safetensors_of_a_finished_run_is_a_one_line_error(tiny_synthfer, tmp_path, capsys):
    run = fit(tiny(tiny_synthfer, tmp_path / "done", epochs=1))
    data = (run.path / "best_model.safetensors").read_bytes()
    (run.path / "best_model.safetensors").write_bytes(data[: len(data) // 3])
    assert cli.main(["evaluate", str(run.path), "--best"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "best_model.safetensors is truncated or not a safetensors file" in line


@pytest.mark.parametrize("content", ["", "{\"config\": {\"epochs\": 2", "\xff\xfe garbage"])
def test_damaged_config_json_is_a_one_line_error(finished, tmp_path, capsys, content):
    run_dir = copy_run(finished, tmp_path / "cfg")
    (run_dir / "config.json").write_bytes(content.encode("latin-1"))
    assert cli.main(["evaluate", str(run_dir)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "config.json" in line and ("not valid JSON" in line or "not UTF-8" in line)


def test_full_disk_names_the_file_and_the_sizes(tiny_synthfer, tmp_path, monkeypatch):
    real_save = torch.save

    def full(obj, path, *a, **k):
        if ".checkpoint.pt." in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, path, *a, **k)
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError, match=r"no space left on device while writing .*checkpoint.pt "
                                            r"\(needs about \d+ MB, \d+ MB free\)"):
        fit(tiny(tiny_synthfer, tmp_path / "full", epochs=1))


def test_run_dir_that_is_a_file_and_a_read_only_folder_fail_before_loading(tiny_synthfer, tmp_path,
                                                                          monkeypatch):
    from adadf_core.engine import loaders

    def no_data(*a, **k):
        raise AssertionError("data was loaded before the run folder was checked")
    monkeypatch.setattr(loaders, "load_splits", no_data)
    monkeypatch.setattr("adadf_core.engine.train.load_splits", no_data)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(RunExistsError, match="is a file, not a folder"):
        fit(tiny(tiny_synthfer, a_file))
    src, mnt = tmp_path / "src", tmp_path / "ro"
    src.mkdir(), mnt.mkdir()
    if subprocess.run(["mount", "--bind", str(src), str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a read-only bind mount here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], check=True, capture_output=True)
        with pytest.raises(RunExistsError, match=r"cannot write to run_dir .*Read-only file system"):
            fit(tiny(tiny_synthfer, mnt / "run"))
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_ctrl_c_is_one_line_with_the_resume_command(tiny_synthfer, tmp_path, monkeypatch, capsys):
    original = AdaDFMethod.training_step

    def interrupt(self, model, images, labels, indices, epoch, step, steps):
        if epoch == 1 and step == 1:
            raise KeyboardInterrupt
        return original(self, model, images, labels, indices, epoch, step, steps)
    monkeypatch.setattr(AdaDFMethod, "training_step", interrupt)
    run_dir = tmp_path / "ctrl-c"
    code = cli.main(["train", "--data-root", str(tiny_synthfer), "--run-dir", str(run_dir), "--epochs", "1",
                     "--set", "image_size=32", "--set", "recipe=light", "--set", "batch_size=16",
                     "--set", "max_train_samples=32", "--set", "max_test_samples=16", "--set", "progress=false"])
    assert code == 130
    line = one_line(capsys.readouterr().err)
    assert f"interrupted at epoch 1, step 2 of {run_dir}" in line and "--resume" in line


def test_non_utf8_label_file_names_the_file(raf_root):
    from adadf_core.data.labelfiles import DatasetError
    from adadf_core.data.dataset import load_split
    label_file = raf_root / "EmoLabel" / "list_patition_label.txt"
    label_file.write_bytes(label_file.read_bytes() + "\u20ac.jpg 3\n".encode("cp1252"))     # 0x80: ambiguous
    with pytest.raises(DatasetError, match=r"list_patition_label.txt: not UTF-8 text \(byte 0x80 on line 18\)"):
        load_split("raf", raf_root, "train", image_size=32)


@pytest.mark.slow
def test_a_killed_kernel_names_the_notebook_and_keeps_the_index(tmp_path):
    import nbformat
    from adadf_core.pipeline import reproduce

    books = tmp_path / "books"
    books.mkdir()
    for name, body in (("01_fine.ipynb", "x = 1"), ("02_dies.ipynb", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")):
        params = nbformat.v4.new_code_cell("output_dir = 'x'")
        params.metadata["tags"] = ["parameters"]
        nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(body)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, str(books / name))
    with pytest.raises(reproduce.NotebookFailedError, match="02_dies.ipynb failed .*kernel .* died"):
        reproduce.reproduce(output=tmp_path / "out", notebooks_dir=books, progress=False)
    timings = (tmp_path / "out" / "timings.csv").read_text()
    assert "01_fine.ipynb" in timings and "02_dies.ipynb" in timings and "kernel died" in timings
    assert (tmp_path / "out" / "README.md").is_file()
