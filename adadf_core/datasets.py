"""Data sets: SynthFER, RAF-DB, AffectNet-7/8, SFEW 2.0 and generic image folders (docs/METHOD.md §8).

    ds = load_split(name, root, split, image_size=224, recipe="official",
                    noise_rate=0.0, noise_seed=0, noise_file=None, cache="memory", max_samples=None)
    image, label, index = ds[i]

Layouts (label orders in ``CLASS_NAMES``; every accepted variant is listed beside its reader below and in
the README's "Running on the real data sets"; hidden files, AppleDouble ``._*`` and ``__MACOSX`` skipped):
  raf / synthfer  EmoLabel/list_patition_label.txt ("train_00001.jpg 5", 1-based) and
                  Image/aligned/<stem>_aligned.jpg; synthfer adds EmoLabel/distribution.csv (ground truth).
                  raf also: the archive's top folder (basic/ inside), images without _aligned, EmoLabel/
                  train.txt + test.txt, DATASET/{train,test}/<1..7>/ with train_labels.csv / test_labels.csv.
  affectnet7/8    {train_set,val_set}/images/<id>.<ext> + annotations/<id>_exp.npy (HQ release), or the 2017
                  release's training.csv / validation.csv + Manually_Annotated_Images/ (cropped to the face
                  box; expression 8-10 dropped); the test split is the validation set; affectnet7 drops 7
                  (Contempt).
  sfew            {Train,Val}/<Emotion>/*, or as distributed: Train/Train_Aligned_Faces/, Val/Val_Aligned_Faces/,
                  Val/Val/ (emotion folders in any letter case); Val is the test split; alphabetical order.
  imagefolder     <split>/<class>/* with split folders train/test (or Train/Val, val); class names are
                  the sorted class folders of the training split (class_names="raf": folders 1..7 as RAF-DB).

Label noise is applied to the training split only (test labels never change). ``max_samples`` keeps a
deterministic *first-N stratified* subset: each class keeps its first samples in file order, in
proportion to its share of the split (largest remainder), before any noise is applied.

Decoded-image cache: ``cache="memory"`` decodes every image once into one uint8 buffer; ``"mmap"`` writes
that buffer to ``<cache_dir>/<key>.npy`` (default cache dir: $ADADF_CACHE or <repo>/data/cache) and
memory-maps it (re-used by later runs; one file per split and stored size); a ``"memory"`` cache above
``MEMORY_CACHE_LIMIT_GB`` is memory-mapped instead. ``"none"`` decodes on every access (at load every
header is read and files cut short are decoded, so they fail there: `_check_files`). Images are stored after the
transform's deterministic resize when that shrinks them (otherwise at their decoded size), so a cached
and an uncached data set return identical tensors.
"""
from __future__ import annotations

import collections
import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from .images import ImageDecodeError, check_complete, decoded_size, is_hidden
from .images import decode_image as _decode_any
from .labelfiles import (AFFECTNET_CSV_HEADER, DatasetError, DatasetNotFoundError, LabelLine, check_label,
                         parse_noise_spec, read_affectnet_csv, read_label_file, read_label_lines, read_text_file,
                         refuse_duplicates, refuse_shifted_labels, sample_key)
from .transforms import FERTransform, build_transform

RAF_CLASSES = ["Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral"]
AFFECTNET_CLASSES = ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]
SFEW_CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]
CLASS_NAMES: dict[str, Optional[list[str]]] = {
    "synthfer": RAF_CLASSES, "raf": RAF_CLASSES, "affectnet7": AFFECTNET_CLASSES[:7],
    "affectnet8": AFFECTNET_CLASSES, "sfew": SFEW_CLASSES, "imagefolder": None,   # from the folders
}
DATASET_NAMES = tuple(CLASS_NAMES)
CACHE_MODES = ("memory", "mmap", "none")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
RAF_LABEL_FILE = "EmoLabel/list_patition_label.txt"


# --------------------------------------------------------------------------------------------
# indexing: which images, which labels

@dataclass
class SplitIndex:
    paths: list[Path]                       # absolute image paths
    names: list[str]                        # image paths relative to the root (``extra["base"]`` when set)
    ids: list[str]                          # the names the data set's own label files use
    labels: np.ndarray                      # int64 [N], 0-based, the data set's label order
    class_names: list[str]
    gt: Optional[np.ndarray] = None         # float32 [N, C] (SynthFER)
    extra: dict = field(default_factory=dict)
    boxes: Optional[np.ndarray] = None      # int64 [N, 4] face box x, y, width, height (AffectNet 2017) or None

    def subset(self, keep: np.ndarray) -> "SplitIndex":
        return SplitIndex([self.paths[i] for i in keep], [self.names[i] for i in keep],
                          [self.ids[i] for i in keep], self.labels[keep], self.class_names,
                          None if self.gt is None else self.gt[keep], self.extra,
                          None if self.boxes is None else self.boxes[keep])


def _describe_layout(root: Path) -> str:
    """A guess of what ``root`` holds, for error messages."""
    if (root / RAF_LABEL_FILE).exists():
        return "a RAF-DB/SynthFER folder (EmoLabel/list_patition_label.txt)"
    if (root / "train_set").is_dir() or (root / "val_set").is_dir():
        return "an AffectNet folder (train_set/, val_set/)"
    if _affectnet_csv(root, "train") is not None:
        return "an AffectNet 2017 folder (training.csv, Manually_Annotated_Images/)"
    if (root / "Train").is_dir() or (root / "Val").is_dir():
        return "an SFEW-style folder (Train/, Val/)"
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "an image folder (train/, test/)"
    try:
        entries = sorted(p.name for p in root.iterdir() if not is_hidden(p.name))[:8]
    except OSError:
        entries = []
    return f"a folder holding {entries}" if entries else "an empty folder"


def _require_file(path: Path, what: str, root: Path, expected: str) -> None:
    if not path.is_file():
        raise DatasetNotFoundError(f"{what} {path} not found; expected {expected}. "
                                   f"{root} looks like {_describe_layout(root)}")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not is_hidden(p.name) and p.suffix.lower() in IMAGE_EXTS)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden(p.name))


def _require_every_class(index: SplitIndex, source: Path) -> None:
    counts = np.bincount(index.labels, minlength=len(index.class_names))
    empty = [index.class_names[c] for c in np.nonzero(counts == 0)[0]]
    if empty:
        raise DatasetError(f"{source}: class(es) {empty} have no training images; every class needs at least one")


# ----------------------------------------------------------------------------------- RAF-DB variants
# Accepted under --data-root (each also one level down in the archive's top folder basic/):
#   EmoLabel/list_patition_label.txt            train_00001.jpg 5 (1-based), both splits in one file
#   EmoLabel/train.txt + EmoLabel/test.txt      the same lines, one file per split
#   Image/aligned/train_00001_aligned.jpg       or without the suffix: Image/aligned/train_00001.jpg
#   DATASET/{train,test}/<1..7>/<image>         the re-packaged copy; train_labels.csv / test_labels.csv
#                                               (header image,label; 1-based) beside DATASET/ are checked
RAF_SPLIT_FILES = {"train": "EmoLabel/train.txt", "test": "EmoLabel/test.txt"}
RAF_FOLDERS = [str(k) for k in range(1, 8)]


def _raf_base(root: Path) -> Path:
    """``root`` or the archive's top folder ``root/basic`` that holds the RAF-DB label files."""
    def has_labels(p: Path) -> bool:
        return (p / RAF_LABEL_FILE).is_file() or (p / RAF_SPLIT_FILES["train"]).is_file()
    if not has_labels(root) and has_labels(root / "basic"):
        return root / "basic"
    return root


def _raf_image(base: Path, name: str) -> Optional[str]:
    """The relative path of a listed RAF-DB image: ``Image/aligned/<stem>_aligned.jpg`` or ``<stem>.jpg``."""
    key = sample_key(name)
    stem, ext = key.rsplit(".", 1) if "." in key else (key, "jpg")
    for rel in (f"Image/aligned/{stem}_aligned.{ext}", f"Image/aligned/{stem}.{ext}"):
        if (base / rel).is_file():
            return rel
    return None


def _raf_lines(base: Path, split: str) -> tuple[Path, list[LabelLine]]:
    """The label file of a split and its lines for this split (names must start with train_ / test_)."""
    expected = "'<name>.jpg <label 1..7>'"
    if (base / RAF_LABEL_FILE).is_file() or not (base / RAF_SPLIT_FILES["train"]).is_file():
        label_file = base / RAF_LABEL_FILE
        _require_file(label_file, "RAF-DB label file", base, "the RAF-DB layout EmoLabel/list_patition_label.txt "
                      "(or EmoLabel/train.txt + test.txt) + Image/aligned/*_aligned.jpg, or DATASET/train/1..7/")
    else:
        label_file = base / RAF_SPLIT_FILES[split]
    lines = read_label_lines(label_file, "label file", expected)
    refuse_duplicates(lines, label_file, key=sample_key)
    for line in lines:
        if not (line.name.startswith("train_") or line.name.startswith("test_")):
            raise DatasetError(f"{label_file}:{line.lineno}: image name {line.name!r} should start with "
                               "'train_' or 'test_'")
    return label_file, [line for line in lines if line.name.startswith(split + "_")]


def _index_raf(root: Path, split: str, synthfer: bool) -> SplitIndex:
    base = root if synthfer else _raf_base(root)
    if not synthfer and not (base / RAF_LABEL_FILE).is_file() and _raf_folder_base(root) is not None:
        return _index_raf_folders(_raf_folder_base(root), split)
    label_file, lines = _raf_lines(base, split)
    paths, names, ids, labels = [], [], [], []
    for line in lines:
        label = check_label(line.value, 7, f"{label_file}:{line.lineno}", base=1)
        rel = _raf_image(base, line.name)
        if rel is None:
            expected = base / f"Image/aligned/{Path(sample_key(line.name)).stem}_aligned.jpg"
            raise DatasetNotFoundError(f"image {expected} listed in {label_file}:{line.lineno} not found "
                                       "(nor without the _aligned suffix)")
        paths.append(base / rel)
        names.append(rel)
        ids.append(line.name)
        labels.append(label)
    index = SplitIndex(paths, names, ids, np.asarray(labels, dtype=np.int64), list(RAF_CLASSES),
                       extra=dict(label_file=str(label_file), base=str(base)))
    if synthfer:
        index.gt = _read_distribution(root, ids)
    elif split == "train" and paths:
        _require_every_class(index, label_file)
    return index


def _raf_folder_base(root: Path) -> Optional[Path]:
    """The folder holding train/<1..7>/ (``root/DATASET`` or ``root``), or None."""
    for base in (root / "DATASET", root):
        train = base / "train"
        if train.is_dir() and {p.name for p in _subfolders(train)} & set(RAF_FOLDERS):
            return base
    return None


def _index_raf_folders(base: Path, split: str) -> SplitIndex:
    split_dir = base / split
    if not split_dir.is_dir():
        raise DatasetNotFoundError(f"RAF-DB split folder {split_dir} not found; expected {base}/train/<1..7>/ "
                                   f"and {base}/test/<1..7>/")
    index = _index_class_folders(base, split_dir, RAF_FOLDERS, RAF_CLASSES, strict=split == "train")
    csv_file = next((d / f"{split}_labels.csv" for d in (base, base.parent) if (d / f"{split}_labels.csv").is_file()),
                    None)
    if csv_file is not None:
        _check_raf_csv(csv_file, index)
    index.ids = [Path(n).name for n in index.names]
    index.extra = dict(label_file=str(csv_file) if csv_file else "", class_folders=str(split_dir), base=str(base))
    return index


def _check_raf_csv(csv_file: Path, index: SplitIndex) -> None:
    """train_labels.csv / test_labels.csv (``image,label``, 1-based) must agree with the class folders."""
    lines = read_label_lines(csv_file, "label file", "'<image>,<label 1..7>'", header=("image", "label"))
    refuse_duplicates(lines, csv_file, key=sample_key)
    listed = {sample_key(line.name): line for line in lines}
    in_folders = {sample_key(n): (n, int(lab)) for n, lab in zip(index.names, index.labels)}
    for key, line in listed.items():
        if key not in in_folders:
            raise DatasetError(f"{csv_file}:{line.lineno}: {line.name} is not in any class folder 1..7")
        name, label = in_folders[key]
        if line.value != label + 1:
            raise DatasetError(f"{csv_file}:{line.lineno}: {line.name} has label {line.value} but lies in "
                               f"folder {name}; expected {label + 1}")
    unlisted = sorted(n for k, (n, _) in in_folders.items() if k not in listed)
    if unlisted:
        raise DatasetError(f"{csv_file} does not list {len(unlisted)} image(s) of the class folders, e.g. {unlisted[:3]}")


def _read_distribution(root: Path, ids: list[str]) -> np.ndarray:
    path = root / "EmoLabel" / "distribution.csv"
    _require_file(path, "SynthFER ground-truth file", root, "a SynthFER root (run `adadf generate-synthfer`)")
    columns = [f"p_{c}" for c in RAF_CLASSES]
    rows: dict[str, np.ndarray] = {}
    with io.StringIO(read_text_file(path, "distribution file"), newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ["name"] + columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {missing}; expected name, votes, {', '.join(columns)}")
        for lineno, row in enumerate(reader, 2):
            try:
                p = np.array([float(row[c]) for c in columns], dtype=np.float64)
            except (TypeError, ValueError):
                raise DatasetError(f"{path}:{lineno}: cannot parse the probabilities of {row.get('name')!r}")
            if (p < 0).any() or abs(p.sum() - 1.0) > 1e-3:
                raise DatasetError(f"{path}:{lineno}: probabilities of {row['name']!r} sum to {p.sum():.4f}; "
                                   "expected non-negative values summing to 1")
            rows[row["name"]] = p / p.sum()
    absent = [i for i in ids if i not in rows]
    if absent:
        raise DatasetError(f"{path} has no row for {len(absent)} image(s), e.g. {absent[:3]}")
    return np.stack([rows[i] for i in ids]).astype(np.float32) if ids else np.zeros((0, 7), np.float32)


# ---------------------------------------------------------------------------------------- AffectNet
def _index_affectnet(root: Path, split: str, drop_contempt: bool) -> SplitIndex:
    if not (root / "train_set").is_dir() and _affectnet_csv(root, split) is not None:
        return _index_affectnet_csv(root, split, drop_contempt)
    sub = root / ("train_set" if split == "train" else "val_set")
    img_dir, ann_dir = sub / "images", sub / "annotations"
    for d in (img_dir, ann_dir):
        if not d.is_dir():
            raise DatasetNotFoundError(f"AffectNet folder {d} not found; expected {{train_set,val_set}}/images/"
                                       f"<id>.jpg + annotations/<id>_exp.npy, or the 2017 release's training.csv + "
                                       f"validation.csv + Manually_Annotated_Images/. {root} looks like "
                                       f"{_describe_layout(root)}")
    paths, names, ids, labels = [], [], [], []
    dropped = 0
    for path in _images_in(img_dir):
        ann = ann_dir / f"{path.stem}_exp.npy"
        if not ann.is_file():
            raise DatasetNotFoundError(f"annotation {ann} for image {path} not found")
        try:
            raw = np.load(ann, allow_pickle=False)
            value = int(str(raw.item() if raw.size == 1 else raw).strip())
        except (ValueError, OSError, TypeError) as e:
            raise DatasetError(f"{ann}: cannot read an integer expression label ({e})")
        label = check_label(value, 8, str(ann))
        if drop_contempt and label == 7:
            dropped += 1
            continue
        paths.append(path)
        names.append(str(path.relative_to(root)))
        ids.append(path.name)
        labels.append(label)
    classes = AFFECTNET_CLASSES[:7] if drop_contempt else list(AFFECTNET_CLASSES)
    return SplitIndex(paths, names, ids, np.asarray(labels, dtype=np.int64), classes,
                      extra=dict(dropped_contempt=dropped, release="hq"))


# The 2017 release: training.csv / validation.csv (validation = the test split) beside or in
# Manually_Annotated_file_lists/, images under Manually_Annotated_Images/ (or Manually_Annotated/...).
AFFECTNET_CSV = {"train": "training.csv", "test": "validation.csv"}
AFFECTNET_CSV_DIRS = ("", "Manually_Annotated_file_lists")
AFFECTNET_IMAGE_DIRS = ("Manually_Annotated_Images", "Manually_Annotated/Manually_Annotated_Images")
AFFECTNET_NOT_EMOTIONS = {8: "None", 9: "Uncertain", 10: "Non-Face"}


def _affectnet_csv(root: Path, split: str) -> Optional[Path]:
    return next((root / d / AFFECTNET_CSV[split] for d in AFFECTNET_CSV_DIRS
                 if (root / d / AFFECTNET_CSV[split]).is_file()), None)


def _index_affectnet_csv(root: Path, split: str, drop_contempt: bool) -> SplitIndex:
    """The 2017 release: rows of the split's CSV with expression 0-7 (0-6 for AffectNet-7); 8 None,
    9 Uncertain and 10 Non-Face are dropped. Each image is cropped to its face box when read, unless the
    image folder was written by `adadf align` (its ``alignment.json`` is there): then the aligned faces are
    read as they are and rows whose face was not aligned are dropped (counted as "not aligned")."""
    csv_file = _affectnet_csv(root, split)
    image_dir = next((root / d for d in AFFECTNET_IMAGE_DIRS if (root / d).is_dir()), None)
    if image_dir is None:
        raise DatasetNotFoundError(f"AffectNet image folder not found under {root}; expected one of "
                                   f"{', '.join(AFFECTNET_IMAGE_DIRS)} beside {csv_file.name}")
    aligned = _aligned_sources(image_dir)
    paths, names, labels, boxes = [], [], [], []
    dropped = {"Contempt": 0, **{v: 0 for v in AFFECTNET_NOT_EMOTIONS.values()}, "not aligned": 0}
    seen: dict[str, int] = {}
    for lineno, row in read_affectnet_csv(csv_file):
        rel, label, box = _affectnet_row(csv_file, lineno, row)
        if rel in seen:
            raise DatasetError(f"{csv_file}: {rel!r} is listed twice (lines {seen[rel]} and {lineno}); "
                               "each image must appear once")
        seen[rel] = lineno
        if label in AFFECTNET_NOT_EMOTIONS or (drop_contempt and label == 7):
            dropped[AFFECTNET_NOT_EMOTIONS.get(label, "Contempt")] += 1
            continue
        if aligned is not None and rel not in aligned:
            dropped["not aligned"] += 1
            continue
        path = image_dir / (aligned[rel] if aligned is not None else rel)
        if not path.is_file():
            raise DatasetNotFoundError(f"image {path} listed in {csv_file}:{lineno} not found")
        paths.append(path)
        names.append(str(path.relative_to(root)))
        labels.append(label)
        boxes.append(box)
    classes = AFFECTNET_CLASSES[:7] if drop_contempt else list(AFFECTNET_CLASSES)
    index = SplitIndex(paths, names, list(names), np.asarray(labels, dtype=np.int64), classes,
                       extra=dict(dropped_contempt=dropped["Contempt"], release="2017", label_file=str(csv_file),
                                  aligned=aligned is not None, dropped={k: v for k, v in dropped.items() if v}),
                       boxes=None if aligned is not None else np.asarray(boxes, dtype=np.int64).reshape(-1, 4))
    if split == "train" and paths:
        _require_every_class(index, csv_file)
    return index


def _aligned_sources(image_dir: Path) -> Optional[dict[str, str]]:
    """{source: output} of the faces `adadf align` wrote into ``image_dir``, or None when it did not."""
    from .align.folder import ALIGN_RECORD, read_manifest
    if not (image_dir / ALIGN_RECORD).is_file():
        return None
    manifest = read_manifest(image_dir)
    return {s: o for s, o, st in zip(manifest["source"], manifest["output"], manifest["status"])
            if st in ("aligned", "skipped_existing") and o}


def _affectnet_row(csv_file: Path, lineno: int, row: list[str]) -> tuple[str, int, tuple[int, int, int, int]]:
    """(relative image path, expression 0..10, face box x, y, w, h) of one CSV row."""
    if len(row) != len(AFFECTNET_CSV_HEADER):
        raise DatasetError(f"{csv_file}:{lineno}: {len(row)} columns; expected {len(AFFECTNET_CSV_HEADER)} "
                           f"({','.join(AFFECTNET_CSV_HEADER)})")
    try:
        x, y, w, h = (int(float(row[i])) for i in (1, 2, 3, 4))
        value = int(row[6])
    except ValueError:
        raise DatasetError(f"{csv_file}:{lineno}: face box {row[1:5]} or expression {row[6]!r} is not an integer")
    label = check_label(value, 11, f"{csv_file}:{lineno}")
    if w <= 0 or h <= 0:
        raise DatasetError(f"{csv_file}:{lineno}: face box width {w} and height {h} must be positive")
    return row[0].strip().replace("\\", "/"), label, (x, y, w, h)


# ------------------------------------------------------------------------------------ class folders
def _index_class_folders(root: Path, split_dir: Path, folders: list[str], class_names: list[str], strict: bool,
                         fold_case: bool = False) -> SplitIndex:
    """<split_dir>/<folder>/* where ``folders[k]`` holds class ``class_names[k]``. ``strict``: every class
    folder must hold an image. ``fold_case``: folder names match in any letter case."""
    def norm(name: str) -> str:
        return name.casefold() if fold_case else name
    wanted = {norm(f): k for k, f in enumerate(folders)}
    found: dict[int, Path] = {}
    unknown = []
    for p in _subfolders(split_dir):
        k = wanted.get(norm(p.name))
        if k is None:
            unknown.append(p.name)
        elif k in found:
            raise DatasetError(f"{split_dir}: folders {found[k].name!r} and {p.name!r} are both class {class_names[k]}")
        else:
            found[k] = p
    if unknown:
        raise DatasetError(f"{split_dir}: unexpected class folder(s) {unknown}; expected {folders}")
    paths, names, labels = [], [], []
    for label, folder_name in enumerate(folders):
        folder = found.get(label, split_dir / folder_name)
        images = _images_in(folder) if folder.is_dir() else []
        if strict and not images:
            raise DatasetError(f"class folder {folder} is missing or holds no images "
                               f"(extensions {', '.join(IMAGE_EXTS)}); every class needs at least one")
        for p in images:
            paths.append(p)
            names.append(p.relative_to(root).as_posix())
            labels.append(label)
    return SplitIndex(paths, names, list(names), np.asarray(labels, dtype=np.int64), list(class_names))


# SFEW 2.0 as distributed: Train/Train_Aligned_Faces/<Emotion>/*.png (the organisers' aligned faces),
# Val/Val_Aligned_Faces/<Emotion>/*, the frames Val/Val/<Emotion>/* (or Train/Train/...), or a tree
# aligned by `adadf align` (Train/<Emotion>/*). The first of these that holds emotion folders is read.
SFEW_SPLIT_DIRS = {"train": ("Train/Train_Aligned_Faces", "Train/Train", "Train"),
                   "test": ("Val/Val_Aligned_Faces", "Val/Val", "Val")}


def sfew_frames_dir(root: str | Path, split: str) -> Path:
    """The folder of SFEW's unaligned frames for ``split`` ("train" / "test"): ``Train/Train`` (``Val/Val``)
    as distributed, else ``Train`` (``Val``); what `adadf align` takes as its source."""
    root = Path(root)
    frames, plain = SFEW_SPLIT_DIRS[split][1:]
    return root / frames if _holds_classes(root / frames, SFEW_CLASSES) else root / plain


def _holds_classes(folder: Path, class_names: list[str]) -> bool:
    wanted = {c.casefold() for c in class_names}
    return folder.is_dir() and any(p.name.casefold() in wanted for p in _subfolders(folder))


def _index_sfew(root: Path, split: str) -> SplitIndex:
    candidates = [root / rel for rel in SFEW_SPLIT_DIRS[split]]
    split_dir = next((d for d in candidates if _holds_classes(d, SFEW_CLASSES)), None)
    if split_dir is None:
        split_dir = candidates[-1]
    if not split_dir.is_dir():
        raise DatasetNotFoundError(f"SFEW split folder {split_dir} not found; expected one of "
                                   f"{', '.join(SFEW_SPLIT_DIRS[split])} holding <Emotion>/* with emotions "
                                   f"{SFEW_CLASSES}. {root} looks like {_describe_layout(root)}")
    index = _index_class_folders(root, split_dir, SFEW_CLASSES, SFEW_CLASSES, strict=True, fold_case=True)
    index.extra = dict(split_dir=split_dir.relative_to(root).as_posix())
    return index


_FOLDER_SPLITS = {"train": ("train", "Train"), "test": ("test", "Test", "val", "Val")}
# class-name sets for `imagefolder` whose folders are numbered: class_names="raf" reads <split>/1..7/
# as RAF-DB's labels 1..7 with RAF-DB's names and order.
FOLDER_CLASS_NAMES = {"raf": (RAF_FOLDERS, RAF_CLASSES)}


def _find_split_dir(root: Path, split: str) -> Path:
    for name in _FOLDER_SPLITS[split]:
        if (root / name).is_dir():
            return root / name
    raise DatasetNotFoundError(f"image-folder split {split!r} not found under {root}; expected one of "
                               f"{', '.join(_FOLDER_SPLITS[split])} holding <class>/* folders. "
                               f"{root} looks like {_describe_layout(root)}")


def _index_imagefolder(root: Path, split: str, class_names: Optional[str] = None) -> SplitIndex:
    train_dir = _find_split_dir(root, "train")
    if class_names is not None:
        if class_names not in FOLDER_CLASS_NAMES:
            raise DatasetError(f"class_names={class_names!r} is not known; expected one of "
                               f"{', '.join(FOLDER_CLASS_NAMES)} (or none: the sorted folder names)")
        folders, names = (list(v) for v in FOLDER_CLASS_NAMES[class_names])
    else:
        folders = names = [p.name for p in _subfolders(train_dir)]
    if not folders:
        raise DatasetError(f"{train_dir} holds no class folders; expected {train_dir}/<class>/<image>")
    if split == "train":
        return _index_class_folders(root, train_dir, folders, names, strict=True)
    return _index_class_folders(root, _find_split_dir(root, "test"), folders, names, strict=False)


def index_split(name: str, root: str | Path, split: str, class_names: Optional[str] = None) -> SplitIndex:
    """List the images and labels of one split, checking the layout. Raises :class:`DatasetError`.
    ``class_names`` (imagefolder only): ``"raf"`` reads class folders 1..7 as RAF-DB's classes."""
    if name not in CLASS_NAMES:
        raise DatasetError(f"unknown data set {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split {split!r}; expected 'train' or 'test'")
    if class_names is not None and name != "imagefolder":
        raise DatasetError(f"class_names={class_names!r} applies to imagefolder only; {name} has its own classes")
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"{name} root {root} not found (or not a folder)")
    if name in ("raf", "synthfer"):
        index = _index_raf(root, split, synthfer=name == "synthfer")
    elif name.startswith("affectnet"):
        index = _index_affectnet(root, split, drop_contempt=name == "affectnet7")
    elif name == "sfew":
        index = _index_sfew(root, split)
    else:
        index = _index_imagefolder(root, split, class_names)
    if len(index.paths) == 0:
        raise DatasetError(f"the {split} split of {name} at {root} holds no images")
    return index


# --------------------------------------------------------------------------------------------
# subsets and label noise

def stratified_first(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices (ascending) of a deterministic first-N stratified subset of size min(n, N)."""
    labels = np.asarray(labels)
    total = len(labels)
    if n >= total:
        return np.arange(total)
    if n < 1:
        raise DatasetError(f"max_samples={n} is not valid; expected a positive integer")
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / total
    take = np.floor(exact).astype(int)
    order = np.argsort(-(exact - take), kind="stable")
    take[order[: n - take.sum()]] += 1
    keep = np.concatenate([np.nonzero(labels == c)[0][:k] for c, k in zip(classes, take)])
    return np.sort(keep)


def symmetric_noise(labels: np.ndarray, rate: float, num_classes: int, seed: int) -> np.ndarray:
    """Flip exactly round(rate*N) labels, chosen uniformly, each to a uniformly random different class."""
    if not 0.0 <= rate < 1.0:
        raise DatasetError(f"noise_rate={rate} is not valid; expected a value in [0, 1)")
    labels = np.asarray(labels, dtype=np.int64)
    noisy = labels.copy()
    n_flip = int(round(rate * len(labels)))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(labels), size=n_flip, replace=False)
    offset = rng.integers(1, num_classes, size=n_flip)
    noisy[chosen] = (labels[chosen] + offset) % num_classes
    return noisy


def _apply_label_file(index: SplitIndex, labels: np.ndarray, spec: str | Path,
                      fmt: Optional[str] = None) -> np.ndarray:
    """``labels`` with the noisy label file's labels put in (matched by `sample_key`; every name must be an
    image of the whole training split, before any ``max_samples`` subset)."""
    path, fmt = parse_noise_spec(spec, fmt)
    table = read_label_file(path, len(index.class_names), fmt)
    pos = {sample_key(name): i for i, name in enumerate(index.names)}
    pos.update({sample_key(name): i for i, name in enumerate(index.ids)})
    unknown = [n for n in table if n not in pos]
    if unknown:
        raise DatasetError(f"label file {path} names {len(unknown)} image(s) that are not in this training split, "
                           f"e.g. {unknown[:5]}")
    noisy = labels.copy()
    for key, (label, _) in table.items():
        noisy[pos[key]] = label
    rows = [pos[k] for k in table]
    refuse_shifted_labels(noisy[rows].tolist(), index.labels[rows].tolist(), path, fmt)
    return noisy


# --------------------------------------------------------------------------------------------
# decoded-image store

def decode_image(path: Path) -> Image.Image:
    """Open and fully decode an image as RGB with the project's one decoder (`adadf_core.images`: EXIF
    orientation applied, transparency composited on white, 16-bit scaled by 1/257). Raises
    :class:`DatasetError` naming the path."""
    try:
        return _decode_any(path)
    except FileNotFoundError:
        raise DatasetNotFoundError(f"image {path} not found")
    except ImageDecodeError as e:
        raise DatasetError(f"cannot decode image {path}: {e.reason}")


def _clip_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """A face box (x, y, w, h) clipped to the image -> PIL crop box (left, top, right, bottom)."""
    x, y, w, h = (int(v) for v in box)
    left, top = min(max(x, 0), width - 1), min(max(y, 0), height - 1)
    return left, top, max(min(x + w, width), left + 1), max(min(y + h, height), top + 1)


def decode_face(path: Path, box=None) -> Image.Image:
    """`decode_image`, cropped to the face box (x, y, w, h; clipped to the image) when one is given."""
    img = decode_image(path)
    return img if box is None else img.crop(_clip_box(box, *img.size))


class ImageStore:
    """uint8 RGB images in one flat buffer (in memory or a memory-mapped .npy) + an [N, 3] index."""

    def __init__(self, buffer: Optional[np.ndarray], index: np.ndarray, mmap_path: Optional[Path] = None):
        self._buffer = buffer
        self.index = index                  # offset, height, width
        self.mmap_path = mmap_path

    @property
    def buffer(self) -> np.ndarray:
        if self._buffer is None:            # re-opened lazily (e.g. in a DataLoader worker)
            self._buffer = np.load(self.mmap_path, mmap_mode="r")
        return self._buffer

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        off, h, w = (int(v) for v in self.index[i])
        return np.asarray(self.buffer[off:off + h * w * 3]).reshape(h, w, 3)

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.mmap_path is not None:
            state["_buffer"] = None         # never pickle a memory map's contents
        return state

    @property
    def nbytes(self) -> int:
        return int(self.index[-1, 0] + self.index[-1, 1] * self.index[-1, 2] * 3) if len(self.index) else 0


def default_cache_dir() -> Path:
    env = os.environ.get("ADADF_CACHE")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data" / "cache"


# Above this many bytes a "memory" cache is memory-mapped from a file in the cache folder instead
# (AffectNet at 224 px would need about 43 GB of RAM); ADADF_MEMORY_CACHE_GB overrides it.
MEMORY_CACHE_LIMIT_GB = 8.0


def memory_cache_limit() -> int:
    return int(float(os.environ.get("ADADF_MEMORY_CACHE_GB", MEMORY_CACHE_LIMIT_GB)) * 2**30)


def _store_sizes(paths: Sequence[Path], transform, boxes: Optional[np.ndarray] = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Stored (height, width) per image and whether the transform's resize is applied before storing.
    Reads every image's header, so a file that is missing or not an image fails here, naming it."""
    sizes = np.zeros((len(paths), 2), dtype=np.int64)
    pre_done = np.zeros(len(paths), dtype=bool)
    for i, p in enumerate(paths):
        try:
            w, h = decoded_size(p)               # after EXIF rotation, as the decoder returns it
        except FileNotFoundError:
            raise DatasetNotFoundError(f"image {p} not found")
        except ImageDecodeError as e:
            raise DatasetError(f"cannot decode image {p}: {e.reason}")
        if boxes is not None:
            left, top, right, bottom = _clip_box(boxes[i], w, h)
            w, h = right - left, bottom - top
        if isinstance(transform, FERTransform):
            pw, ph = transform.pre_size(w, h)
            if pw * ph < w * h:
                w, h, pre_done[i] = pw, ph, True
        sizes[i] = (h, w)
    return sizes, pre_done


def _cache_key(paths: Sequence[Path], sizes: np.ndarray, pre_done: np.ndarray, transform,
               boxes: Optional[np.ndarray]) -> str:
    """What a cache file holds: these files (path, size, mtime) decoded at these stored sizes. The
    resize enters the key only when it was applied before storing, so runs at different image sizes
    that store the images as decoded share one file."""
    return hashlib.sha1(json.dumps(dict(
        paths=[str(Path(p).resolve()) for p in paths],
        stat=[(st.st_size, st.st_mtime_ns) for st in map(os.stat, paths)],
        sizes=sizes.tolist(), pre=pre_done.tolist(),
        pre_repr=repr(getattr(transform, "pre", None)) if pre_done.any() else None,
        boxes=None if boxes is None else np.asarray(boxes).tolist(),
    )).encode()).hexdigest()[:20]


def _check_files(paths: Sequence[Path], boxes: Optional[np.ndarray]) -> None:
    """Without a cache, at load rather than mid-epoch: every header is read (`_store_sizes`) and every
    JPEG / PNG that lacks its end marker (`images.check_complete`) is decoded, so a file cut short fails
    here, naming it (a file with data after its end marker decodes and passes)."""
    _store_sizes(paths, None, boxes)
    for p in paths:
        try:
            check_complete(p)
        except ImageDecodeError:
            decode_image(p)


def build_store(paths: Sequence[Path], transform, mode: str, cache_dir: Optional[Path] = None,
                progress: bool = True, desc: str = "decoding", boxes: Optional[np.ndarray] = None
                ) -> tuple[ImageStore, np.ndarray]:
    """Decode every image once (cropped to ``boxes`` when given). Returns the store and the per-image
    flag 'resize already applied'. A ``"memory"`` store larger than `memory_cache_limit` is
    memory-mapped instead; with ``progress`` the size and place of the cache are printed."""
    from .progress import bar as tqdm

    sizes, pre_done = _store_sizes(paths, transform, boxes)
    offsets = np.concatenate([[0], np.cumsum(sizes[:, 0] * sizes[:, 1] * 3)])
    index = np.stack([offsets[:-1], sizes[:, 0], sizes[:, 1]], axis=1).astype(np.int64)
    total = int(offsets[-1])
    if mode == "memory" and total > memory_cache_limit():
        mode = "mmap"
        note = f" (over the {memory_cache_limit() / 2**30:.1f} GiB memory-cache limit, ADADF_MEMORY_CACHE_GB)"
    else:
        note = ""
    key = _cache_key(paths, sizes, pre_done, transform, boxes)
    known = mode == "memory" and key in _DECODED
    target = None
    if mode == "mmap":
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        target = cache_dir / f"images-{key}.npy"
    if progress:
        where = (f"memory-mapped from {target}{note}" if target is not None else
                 "in memory (decoded earlier in this process)" if known else "in memory")
        print(f"{desc}: decoded-image cache of {len(paths)} images, {total / 2**20:,.1f} MiB, {where}")
    if known:
        _DECODED.move_to_end(key)
        return _DECODED[key], pre_done.copy()
    if target is not None:
        if target.exists():
            return ImageStore(None, index, target), pre_done
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        buffer = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(total,))
    else:
        buffer = np.empty(total, dtype=np.uint8)
    for i, p in enumerate(tqdm(paths, desc=desc, disable=not progress, leave=False)):
        img = decode_face(p, None if boxes is None else boxes[i])
        if pre_done[i]:
            img = transform.pre(img)
        arr = np.asarray(img, dtype=np.uint8)
        if arr.shape != (sizes[i, 0], sizes[i, 1], 3):
            raise DatasetError(f"image {p} decoded to shape {arr.shape}, expected {tuple(sizes[i])} + (3,)")
        buffer[offsets[i]:offsets[i + 1]] = arr.reshape(-1)
    if target is not None:
        buffer.flush()
        del buffer
        os.replace(tmp, target)
        return ImageStore(None, index, target), pre_done
    buffer.flags.writeable = False           # shared by every data set built from it (`_remember`)
    return _remember(key, ImageStore(buffer, index)), pre_done


# Decoded in-memory stores of this process by `_cache_key` (the files' path, size and mtime, the stored sizes,
# the resize): a study's runs in one process (a notebook's kernel) decode each split once, not once a run.
# Read-only, least recently used first out, within half the memory-cache limit.
_DECODED: "collections.OrderedDict[str, ImageStore]" = collections.OrderedDict()


def _remember(key: str, store: ImageStore) -> ImageStore:
    _DECODED[key] = store
    budget = memory_cache_limit() // 2
    while _DECODED and sum(s.nbytes for s in _DECODED.values()) > budget:
        _DECODED.popitem(last=False)
    return store


# --------------------------------------------------------------------------------------------
# the data set

class FERDataset(Dataset):
    """One split of a data set. ``ds[i] -> (image tensor, training label, i)``.

    Attributes (docs/ARCHITECTURE.md, "Data contract"): labels, clean_labels, flipped, class_names,
    num_classes, gt_distribution, names; also ids (label-file names), paths, root, split, name,
    transform, noise (a description of the label noise applied), boxes (AffectNet 2017 face boxes or None).
    """

    def __init__(self, name: str, root: Path, split: str, index: SplitIndex, labels: np.ndarray,
                 transform, store: Optional[ImageStore] = None, pre_done: Optional[np.ndarray] = None,
                 noise: Optional[dict] = None):
        self.name, self.root, self.split = name, Path(root), split
        self.paths, self.names, self.ids = list(index.paths), list(index.names), list(index.ids)
        self.class_names = list(index.class_names)
        self.num_classes = len(self.class_names)
        self.clean_labels = torch.as_tensor(index.labels, dtype=torch.long)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.flipped = self.labels != self.clean_labels
        self.gt_distribution = None if index.gt is None else torch.as_tensor(index.gt, dtype=torch.float32)
        self.transform = transform
        self.store, self.pre_done = store, pre_done
        self.noise = noise or dict(kind="none")
        self.info = dict(index.extra)
        self.boxes = index.boxes

    def __len__(self) -> int:
        return len(self.paths)

    def raw_image(self, i: int) -> Image.Image:
        """The decoded RGB image before the transform's random part (after its resize when cached so)."""
        if self.store is None:
            return self.decode(i)
        return Image.fromarray(self.store[i])

    def decode(self, i: int) -> Image.Image:
        """Image ``i`` decoded from its file (cropped to its face box when the data set has boxes)."""
        return decode_face(self.paths[i], None if self.boxes is None else self.boxes[i])

    def __getitem__(self, i: int):
        i = int(i)
        t = self.transform
        if self.store is None:
            img = self.decode(i)
            out = t(img) if t is not None else img
        else:
            img = Image.fromarray(self.store[i])
            if isinstance(t, FERTransform):
                out = t.post(img if self.pre_done[i] else t.pre(img))
            else:
                out = t(img) if t is not None else img
        return out, int(self.labels[i]), i

    def class_counts(self, clean: bool = False) -> torch.Tensor:
        return torch.bincount(self.clean_labels if clean else self.labels, minlength=self.num_classes)

    def __repr__(self) -> str:
        return (f"FERDataset({self.name!r}, split={self.split!r}, n={len(self)}, classes={self.class_names}, "
                f"noise={self.noise}, root={str(self.root)!r})")


def load_split(name: str, root: Optional[str | Path], split: str, image_size: int = 224,
               recipe: str = "official", noise_rate: float = 0.0, noise_seed: int = 0,
               noise_file: Optional[str | Path] = None, cache: str = "memory",
               max_samples: Optional[int] = None, cache_dir: Optional[str | Path] = None,
               progress: bool = True, noise_format: Optional[str] = None,
               class_names: Optional[str] = None, check_files: bool = True) -> FERDataset:
    """Load one split (see the module docstring). Noise arguments only affect the training split.
    ``noise_file`` may carry its format as a prefix (``scn:PATH``; `labelfiles.NOISE_FORMATS`), or give
    ``noise_format``. ``class_names="raf"``: imagefolder class folders 1..7 are RAF-DB's classes.
    ``check_files=False`` skips the header check of ``cache="none"`` (for a split whose files were just read)."""
    if name not in CLASS_NAMES:
        raise DatasetError(f"unknown data set {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    if cache not in CACHE_MODES:
        raise DatasetError(f"cache={cache!r} is not valid; expected one of {', '.join(CACHE_MODES)}")
    if root is None:
        if name != "synthfer":
            raise DatasetError(f"data set {name!r} needs a root folder (only synthfer has a default)")
        from . import synthfer
        root = synthfer.ensure()
    root = Path(root)
    index = index_split(name, root, split, class_names)
    root = Path(index.extra.get("base", root))        # RAF-DB given by its archive folder: names are under basic/
    file_labels = None
    if split == "train" and noise_file is not None:
        if noise_rate:
            raise DatasetError("give either noise_rate or noise_file, not both")
        file_labels = _apply_label_file(index, index.labels, noise_file, noise_format)   # the whole split
    if max_samples is not None:
        keep = stratified_first(index.labels, int(max_samples))
        index = index.subset(keep)
        file_labels = None if file_labels is None else file_labels[keep]
    labels = index.labels.copy()
    noise: dict = dict(kind="none")
    if split == "train":
        if file_labels is not None:
            labels = file_labels
            noise = dict(kind="file", file=str(noise_file))
        elif noise_rate:
            labels = symmetric_noise(labels, float(noise_rate), len(index.class_names), int(noise_seed))
            noise = dict(kind="symmetric", rate=float(noise_rate), seed=int(noise_seed))
        noise["flipped"] = int((labels != index.labels).sum())
    transform = build_transform(name, split, image_size, recipe)
    store = pre_done = None
    if cache != "none":
        store, pre_done = build_store(index.paths, transform, cache, cache_dir, progress,
                                      desc=f"decoding {name} {split}", boxes=index.boxes)
    elif check_files:
        _check_files(index.paths, index.boxes)
    return FERDataset(name, root, split, index, labels, transform, store, pre_done, noise)


# --------------------------------------------------------------------------------------------
# samplers

class BalancedUndersampler(Sampler[int]):
    """Class-balanced undersampling, redrawn every epoch: each class present contributes m samples
    drawn without replacement, m = the smallest class count; order shuffled. Deterministic given
    (seed, epoch); call ``set_epoch(e)`` before each epoch. ``redraw`` (the authors' sampler, docs/METHOD.md
    §4): every further pass in the same epoch (the mining pass) draws its own subset, seeded by (seed, epoch,
    pass); without it every pass of an epoch sees the training pass's subset."""

    def __init__(self, labels: torch.Tensor | np.ndarray, seed: int = 0, redraw: bool = False):
        labels = np.asarray(labels, dtype=np.int64)
        self.seed, self.epoch, self.redraw, self.passes = int(seed), 0, bool(redraw), 0
        self.by_class = [np.nonzero(labels == c)[0] for c in np.unique(labels)]
        self.per_class = min(len(v) for v in self.by_class) if self.by_class else 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.passes = int(epoch), 0

    def __len__(self) -> int:
        return self.per_class * len(self.by_class)

    def indices(self, draw: int = 0) -> np.ndarray:
        """The subset of pass ``draw`` (0 = the training pass) of the current epoch, shuffled."""
        rng = np.random.default_rng([self.seed, self.epoch] + ([int(draw)] if draw else []))
        chosen = [rng.choice(idx, size=self.per_class, replace=False) for idx in self.by_class]
        return rng.permutation(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)

    def __iter__(self) -> Iterator[int]:
        draw = self.passes if self.redraw else 0
        self.passes += 1
        return iter(int(i) for i in self.indices(draw))


def make_train_sampler(ds: FERDataset, name: str, seed: int, redraw: bool = False) -> Optional[Sampler]:
    """The balanced undersampler for affectnet7/affectnet8 (docs/METHOD.md §6; ``redraw``: a new subset for
    each pass of an epoch); None (plain shuffle) otherwise."""
    if name in ("affectnet7", "affectnet8"):
        return BalancedUndersampler(ds.labels, seed, redraw)
    return None
