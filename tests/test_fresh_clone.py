"""A newcomer's first command: the pipeline from a clone of this repository at another path, with the
default output folders, leaves every committed file as it was and writes no path of the clone into its
records (slow: it runs notebooks in a clone)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adadf_core.pipeline.notebook import project_root

ROOT = project_root()


def git(*args, cwd=ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """``git clone`` of this checkout at another path, with the working tree's uncommitted changes laid
    over it (so the test checks the code under test, committed or not)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    dest = tmp_path_factory.mktemp("elsewhere") / "adadf-clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    changed = git("ls-files", "-m", "-o", "--exclude-standard").splitlines()
    deleted = set(git("ls-files", "-d").splitlines())
    for rel in changed:
        if rel in deleted or not (ROOT / rel).is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    for rel in deleted:
        (dest / rel).unlink(missing_ok=True)
    git("add", "-A", cwd=dest)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m",
                    "working tree"], cwd=dest, check=True)
    yield dest
    shutil.rmtree(dest.parent, ignore_errors=True)


def adadf(clone: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``adadf`` run from the clone, importing the clone's own package."""
    env = {**os.environ, "PYTHONPATH": str(clone)}
    env.pop("ADADF_PROGRESS", None)
    return subprocess.run([sys.executable, "-m", "adadf_core.cli", *args], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_reproduce_from_a_fresh_clone_at_another_path(clone, tiny_synthfer):
    assert Path(sys.modules["adadf_core"].__file__).resolve().parent.parent != clone
    # the quick pipeline, default output folder
    quick = adadf(clone, "reproduce", "--quick", "--only", "00,02", "--device", "cpu", "--no-progress",
                  "--data-root", str(tiny_synthfer))
    assert quick.returncode == 0, quick.stdout[-3000:] + quick.stderr[-3000:]
    out = clone / "results" / "synthfer-quick"
    assert (out / "tables" / "02_accuracy.csv").is_file() and (out / "README.md").is_file()
    # the run was compared with the committed reference and said so (a quick run: other parameters)
    if (clone / "results" / "reference" / "synthfer" / "tables").is_dir():
        assert "compared with the reference results/reference/synthfer" in quick.stdout
        assert "parameters differ from the reference's" in quick.stdout
        assert (out / "reference_comparison.md").is_file()
    # the full pipeline's default folder (results/synthfer) is not refused either
    full = adadf(clone, "reproduce", "--only", "00", "--device", "cpu", "--no-progress")
    assert full.returncode == 0, full.stdout[-3000:] + full.stderr[-3000:]
    assert (clone / "results" / "synthfer" / "tables" / "00_method.json").is_file()
    # nothing committed changed: results are the user's own, the reference is never written
    assert git("status", "--porcelain", cwd=clone) == ""
    # the records hold no path of the clone: folders are relative to the repository
    for path in (out / "pipeline.json", out / "README.md", clone / "results" / "synthfer" / "pipeline.json"):
        assert str(clone) not in path.read_text(), f"{path} holds the clone's absolute path"
    record = json.loads((out / "pipeline.json").read_text())
    assert record["notebook_parameters"]["02_training.ipynb"]["output_dir"] == "results/synthfer-quick"
    assert record["provenance"]["commit"] == git("rev-parse", "HEAD", cwd=clone).strip()
    assert record["provenance"]["dirty"] is False


def test_nothing_committed_holds_an_absolute_path():
    """No tracked file (code, docs, README, results, notebooks) holds an absolute path of the machine that wrote
    it or the folder name of one maintainer's machine; this file, which lists the markers, is the exception."""
    this = Path(__file__).resolve().relative_to(ROOT).as_posix()
    tracked = [p for p in git("ls-files").splitlines()
               if (ROOT / p).is_file() and p != this and not p.endswith((".png", ".jpg", ".npy", ".pt"))]
    markers = [str(ROOT), "/work/", "/home/", "/tmp/pytest", "/root/", "/Users/"]
    offenders = {p: m for p in tracked for m in markers if m in (ROOT / p).read_text(errors="replace")}
    assert len(tracked) > 100, f"only {len(tracked)} tracked files: is git ls-files running in the repository?"
    assert not offenders, offenders
