"""Shared fixtures: a tiny generated SynthFER and tiny trees in each official data-set layout."""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_synthfer(tmp_path_factory) -> Path:
    """A tiny SynthFER (70 train / 35 test, 100x100 aligned crops, seed 0); returns its root."""
    from adadf_core.data import synthfer

    root = tmp_path_factory.mktemp("synthfer") / "synthfer-structured"   # the default copy's folder name
    synthfer.generate(root, n_train=70, n_test=35, seed=0, progress=False)
    return root


def save_image(path: Path, size=(20, 16), seed: int = 0, mode: str = "RGB") -> Path:
    """Write a small random image (``size`` = (width, height)) in ``mode`` to ``path``."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 4), dtype=np.uint8)
    img = Image.fromarray(arr, "RGBA").convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def make_raf(root: Path, train_labels=(1, 2, 3, 4, 5, 6, 7, 1, 4, 7), test_labels=(1, 2, 3, 4, 5, 6, 7)) -> Path:
    """RAF-DB basic layout with the given 1-based labels (100x100 is not needed: 24x24 images)."""
    lines = []
    for split, labels in (("train", train_labels), ("test", test_labels)):
        width = 5 if split == "train" else 4
        for i, lab in enumerate(labels, 1):
            stem = f"{split}_{i:0{width}d}"
            save_image(root / "Image" / "aligned" / f"{stem}_aligned.jpg", (24, 24), seed=i + 500 * (split == "test"))
            lines.append(f"{stem}.jpg {lab}")
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def make_affectnet(root: Path, train_labels=(0, 1, 2, 3, 4, 5, 6, 7, 7, 1, 1, 0),
                   val_labels=(0, 1, 2, 3, 4, 5, 6, 7), str_labels: bool = True) -> Path:
    """AffectNet layout: {train_set,val_set}/images/<id>.jpg + annotations/<id>_exp.npy.

    ``str_labels`` stores the label as a numpy string (as the common distribution does)."""
    for split, labels in (("train_set", train_labels), ("val_set", val_labels)):
        for i, lab in enumerate(labels):
            ident = f"{split[:1]}{i:03d}"
            save_image(root / split / "images" / f"{ident}.jpg", (30, 30), seed=i)
            value = np.array(str(lab)) if str_labels else np.array(lab)
            (root / split / "annotations").mkdir(parents=True, exist_ok=True)
            np.save(root / split / "annotations" / f"{ident}_exp.npy", value)
    return root


SFEW = ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]


def make_sfew(root: Path, per_class_train: int = 2, per_class_val: int = 1) -> Path:
    """SFEW 2.0 layout: Train/<Emotion>/*, Val/<Emotion>/*; some PNG, grey-scale and RGBA images."""
    for split, n in (("Train", per_class_train), ("Val", per_class_val)):
        for c, emo in enumerate(SFEW):
            for i in range(n):
                mode = ("RGB", "L", "RGBA")[(c + i) % 3]
                ext = ".png" if mode != "RGB" else ".jpg"
                save_image(root / split / emo / f"{emo.lower()}_{i}{ext}", (40, 32), seed=c * 10 + i, mode=mode)
    return root


def make_imagefolder(root: Path, classes=("cat", "dog", "owl"), splits=("train", "test")) -> Path:
    for s, split in enumerate(splits):
        for c, name in enumerate(classes):
            for i in range(3 - s):
                save_image(root / split / name / f"{i}.jpg", (18, 18), seed=100 * s + 10 * c + i)
    return root


@pytest.fixture
def raf_root(tmp_path) -> Path:
    return make_raf(tmp_path / "raf")


@pytest.fixture
def affectnet_root(tmp_path) -> Path:
    return make_affectnet(tmp_path / "affectnet")


@pytest.fixture
def sfew_root(tmp_path) -> Path:
    return make_sfew(tmp_path / "sfew")


@pytest.fixture
def imagefolder_root(tmp_path) -> Path:
    return make_imagefolder(tmp_path / "folder")


def missing_attribute(module: str, attributes) -> str | None:
    """For docs tests: ``"<module.path> has no attribute 'x'"`` when ``module`` (imported) lacks the chain
    ``attributes``, else None."""
    obj = importlib.import_module(module)
    for i, part in enumerate(attributes):
        if not hasattr(obj, part):
            return f"{'.'.join([module, *attributes[:i]])} has no attribute {part!r}"
        obj = getattr(obj, part)
    return None
