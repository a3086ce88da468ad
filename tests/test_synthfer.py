"""SynthFER generator: determinism, label/vote consistency, layout, landmarks, idempotency, CLI."""
from __future__ import annotations

import csv
import hashlib
import json
import platform
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adadf_core.data import synthfer
from adadf_core.data.synthfer import CLASS_NAMES, SynthFERError

SMALL = dict(n_train=12, n_test=6, progress=False)


def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def read_labels(root):
    out = {}
    for line in (root / "EmoLabel" / "list_patition_label.txt").read_text().splitlines():
        name, lab = line.split()
        out[name] = int(lab) - 1
    return out


def test_same_seed_same_bytes(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    c = tmp_path / "c"
    synthfer.generate(a, seed=3, **SMALL)
    synthfer.generate(b, seed=3, **SMALL)
    synthfer.generate(c, seed=4, **SMALL)
    files = ["EmoLabel/list_patition_label.txt", "EmoLabel/distribution.csv", "EmoLabel/landmarks.csv",
             "synthfer.json", "Image/aligned/train_00001_aligned.jpg", "Image/aligned/test_0006_aligned.jpg",
             "Image/original/train_00012.jpg"]
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / files[1]).read_bytes() != (c / files[1]).read_bytes()
    assert (a / files[4]).read_bytes() != (c / files[4]).read_bytes()


def test_layout_counts_and_sizes(tiny_synthfer):
    root = tiny_synthfer
    labels = read_labels(root)
    assert len(labels) == 105
    assert sum(n.startswith("train_") for n in labels) == 70 and "train_00070.jpg" in labels
    assert "test_0035.jpg" in labels and set(labels.values()) <= set(range(7))
    for name in ("train_00001", "test_0035"):
        im = Image.open(root / "Image" / "aligned" / f"{name}_aligned.jpg")
        assert im.size == (100, 100) and im.mode == "RGB"
        orig = Image.open(root / "Image" / "original" / f"{name}.jpg")
        assert 160 <= orig.size[0] <= 220 and orig.size[0] == orig.size[1]
    meta = json.loads((root / "synthfer.json").read_text())
    assert meta["train"]["count"] == 70 and meta["test"]["count"] == 35
    assert sum(meta["train"]["class_counts"].values()) == 70
    assert meta["train"]["class_counts"] == {c: sum(1 for n, l in labels.items() if n.startswith("train_") and l == i)
                                             for i, c in enumerate(CLASS_NAMES)}


def test_votes_distribution_and_majority(tiny_synthfer):
    rows = read_rows(tiny_synthfer / "EmoLabel" / "distribution.csv")
    labels = read_labels(tiny_synthfer)
    assert len(rows) == 105
    disagree = 0
    for row in rows:
        p = np.array([float(row[f"p_{c}"]) for c in CLASS_NAMES])
        latent = np.array([float(row[f"latent_{c}"]) for c in CLASS_NAMES])
        votes = int(row["votes"])
        assert 10 <= votes <= 40
        assert abs(p.sum() - 1) < 1e-5 and abs(latent.sum() - 1) < 1e-5
        counts = np.rint(p * votes)
        assert abs(counts.sum() - votes) < 1e-6 and np.allclose(counts / votes, p, atol=1e-6)
        label = labels[row["name"]]
        assert counts[label] == counts.max()                          # the hard label is the majority vote
        disagree += label != latent.argmax()
    meta = json.loads((tiny_synthfer / "synthfer.json").read_text())
    assert meta["disagreement_share"] == pytest.approx(disagree / 105)
    assert meta["train"]["disagreement_share"] * 70 + meta["test"]["disagreement_share"] * 35 == pytest.approx(disagree)


def test_landmarks_inside_image(tiny_synthfer):
    rows = read_rows(tiny_synthfer / "EmoLabel" / "landmarks.csv")
    assert len(rows) == 105
    for row in rows:
        w, h = int(row["width"]), int(row["height"])
        assert Image.open(tiny_synthfer / "Image" / "original" / row["name"]).size == (w, h)
        pts = np.array([float(v) for k, v in row.items() if k.endswith("_x") or k.endswith("_y")]).reshape(5, 2)
        assert (pts[:, 0] > 0).all() and (pts[:, 0] < w).all() and (pts[:, 1] > 0).all() and (pts[:, 1] < h).all()
        # eyes above the nose above the mouth, in the face's own (rotated) frame: eye distance is sane
        eye_dist = np.linalg.norm(pts[0] - pts[1])
        assert 0.12 * w < eye_dist < 0.35 * w


def test_landmarks_match_rendered_features(tmp_path):
    # a dark pupil sits at each eye landmark: the pixel there is darker than the face around it
    root = tmp_path / "s"
    synthfer.generate(root, seed=1, n_train=6, n_test=1, progress=False, occluder_prob=0.0, glasses_prob=0.0,
                      noise_std=(0.0, 0.0), blur=(0.0, 0.0), intensity=(0.0, 0.0), expr_jitter=0.0)
    for row in read_rows(root / "EmoLabel" / "landmarks.csv"):
        img = np.asarray(Image.open(root / "Image" / "original" / row["name"]).convert("L"), dtype=float)
        for eye in ("left_eye", "right_eye"):
            x, y = int(float(row[f"{eye}_x"])), int(float(row[f"{eye}_y"]))
            assert img[y, x] < 90, (row["name"], eye, img[y, x])


def test_idempotent_and_refuses_to_overwrite(tmp_path):
    root = tmp_path / "s"
    synthfer.generate(root, seed=0, **SMALL)
    stamp = (root / "EmoLabel" / "list_patition_label.txt").stat().st_mtime_ns
    meta = synthfer.generate(root, seed=0, **SMALL)            # same parameters: nothing written
    assert meta["seconds"] == 0.0
    assert (root / "EmoLabel" / "list_patition_label.txt").stat().st_mtime_ns == stamp
    with pytest.raises(SynthFERError, match="different parameters"):
        synthfer.generate(root, seed=1, **SMALL)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SynthFERError, match="refusing to overwrite"):
        synthfer.generate(other, seed=0, **SMALL)
    assert (other / "notes.txt").read_text() == "mine"
    with pytest.raises(SynthFERError, match="unknown SynthFER parameter"):
        synthfer.generate(tmp_path / "x", colour=True)


@pytest.mark.parametrize("model, disagreement", [("unstructured", (0.05, 0.15)), ("structured", (0.02, 0.06))])
def test_latent_mixtures_and_votes_statistics(model, disagreement):
    params = synthfer._normalise_params({"ambiguity_model": model})
    rng = np.random.default_rng(0)
    lab = synthfer.sample_labels(20000, rng, params)
    assert np.allclose(lab["latent"].sum(1), 1)
    assert np.array_equal(lab["votes"].sum(1), lab["k"]) and lab["k"].min() >= 10 and lab["k"].max() <= 40
    # dominant classes follow RAF-DB's imbalance: Happiness most frequent, Fear least
    freq = np.bincount(lab["latent"].argmax(1), minlength=7) / 20000
    assert freq.argmax() == 3 and freq.argmin() == 1
    share = (lab["label"] != lab["dominant"]).mean()
    assert disagreement[0] <= share <= disagreement[1]
    # no ambiguity and no annotator noise: every vote is the dominant class
    clean = synthfer.sample_labels(500, rng, dict(params, ambiguity=0.0, annotator_noise=0.0))
    assert (clean["label"] == clean["dominant"]).all() and (clean["votes"].max(1) == clean["k"]).all()


def test_default_root_without_adadf_data_is_the_repository_data_folder(monkeypatch):
    import adadf_core

    monkeypatch.delenv("ADADF_DATA", raising=False)
    data = Path(adadf_core.__file__).resolve().parent.parent / "data"
    assert synthfer.default_root() == data / "synthfer-structured"
    assert synthfer.default_root("unstructured") == data / "synthfer-unstructured"


def test_default_root_and_ensure(tmp_path, monkeypatch):
    monkeypatch.setenv("ADADF_DATA", str(tmp_path / "data"))
    assert synthfer.default_root() == tmp_path / "data" / "synthfer-structured"
    root = synthfer.ensure(n_train=3, n_test=2, progress=False)
    assert root == tmp_path / "data" / "synthfer-structured" and (root / "synthfer.json").exists()
    other = synthfer.ensure(n_train=3, n_test=2, progress=False, ambiguity_model="unstructured")
    assert other == tmp_path / "data" / "synthfer-unstructured"
    assert not list((tmp_path / "data").glob(".*partial*"))


def test_synthfer_samples_figure(tiny_synthfer, tmp_path):
    from adadf_core import plots

    fig = plots.synthfer_samples(tiny_synthfer, per_class=3)
    assert len(fig.axes) == 21
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles and all(t.split()[0] in CLASS_NAMES for t in titles)
    import matplotlib.pyplot as plt
    plt.close(fig)
    with pytest.raises(SynthFERError, match="list_patition_label.txt not found"):
        plots.synthfer_samples(tmp_path)


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert synthfer.cli_main(["--out", str(out), "--n-train", "8", "--n-test", "4", "--seed", "2",
                              "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "train: 8 images" in text and "test: 4 images" in text and "disagreement share" in text
    assert json.loads((out / "synthfer.json").read_text())["params"]["seed"] == 2
    (out / "synthfer.json").write_text("{}")
    assert synthfer.cli_main(["--out", str(out), "--no-progress"]) == 2
    assert "different parameters" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# pinned output: SynthFER's bytes must not change by accident

PINNED = dict(n_train=40, n_test=20, seed=0, ambiguity_model="unstructured")   # version 2's only model
# SHA-256 over the sorted relative paths and bytes (tree_sha256) of a generation with PINNED
PINNED_TABLES_SHA256 = "b72b94fce898d4c0a9d2970115239bdc4b6d6c575a1d526f1616c12396f11540"  # all but *.jpg
PINNED_STRUCTURED_TABLES_SHA256 = "9eb64512f158b86204963ea13ea0985d4a385f25c2c345943a8a6497787813b7"
PINNED_TREE_SHA256 = "5e7daf14e65c6de69d2f5815ffa9ffc3752e343ed76a27b9f19c2f1c4179644e"    # every file
WHEN_INTENDED = ("if the change is intended: bump GENERATOR_VERSION in adadf_core/data/synthfer/files.py (existing "
                 "roots then ask to be regenerated instead of being reused) and update both pinned hashes in "
                 "tests/test_synthfer.py")


def tree_sha256(root, include=lambda path: True) -> str:
    """SHA-256 over the files under ``root`` (those ``include`` keeps): sorted relative paths, then bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file() and include(p)):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def reference_cpu() -> bool:
    """x86-64 with AVX2 and FMA3 in use by numpy: where PINNED_TREE_SHA256 was measured.

    numpy's float32 kernels round differently without them (measured: NPY_DISABLE_CPU_FEATURES="AVX2 FMA3"
    gives other image bytes and the same tables); numpy 1.26 / 2.1 and Pillow 10.4 / 12.3 give the same bytes.
    """
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:                                       # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features
    return platform.machine().lower() in ("x86_64", "amd64") and bool(features.get("AVX2") and features.get("FMA3"))


@pytest.fixture(scope="module")
def pinned_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pinned") / "synthfer"
    synthfer.generate(root, progress=False, **PINNED)
    return root


def test_pinned_ground_truth_of_the_structured_model(tmp_path):
    """The structured model's tables (same 40 + 20 faces, seed 0) are pinned too (WHEN_INTENDED)."""
    synthfer.generate(tmp_path / "s", progress=False, **dict(PINNED, ambiguity_model="structured"))
    got = tree_sha256(tmp_path / "s", include=lambda p: p.suffix != ".jpg")
    assert got == PINNED_STRUCTURED_TABLES_SHA256, f"SynthFER's structured tables changed (sha256 {got}); {WHEN_INTENDED}"


def test_pinned_ground_truth_and_landmarks(pinned_root):
    """The label list, distribution.csv (votes, vote shares, latent mixtures), landmarks.csv and
    synthfer.json of a 40 + 20 face generation (seed 0) are pinned by hash; they are float64 arithmetic
    and text, the same on every platform. A failure means SynthFER's ground truth changed; when the
    change is intended, bump GENERATOR_VERSION and update the pinned hashes (WHEN_INTENDED)."""
    got = tree_sha256(pinned_root, include=lambda p: p.suffix != ".jpg")
    assert got == PINNED_TABLES_SHA256, f"SynthFER's tables changed (sha256 {got}); {WHEN_INTENDED}"


@pytest.mark.skipif(not reference_cpu(), reason="the pinned image bytes were measured on x86-64 with AVX2 + FMA3")
def test_pinned_bytes_of_every_file(pinned_root):
    """Every byte SynthFER writes for 40 + 20 faces (seed 0), images included, is pinned by hash, so
    any change to the renderer fails here. When the change is intended, bump GENERATOR_VERSION and
    update the pinned hashes (WHEN_INTENDED)."""
    got = tree_sha256(pinned_root)
    assert got == PINNED_TREE_SHA256, f"SynthFER's files changed (sha256 {got}); {WHEN_INTENDED}"
