"""Which images and which labels: every accepted on-disk layout of SynthFER, RAF-DB, AffectNet-7/8, SFEW 2.0 and
generic image folders (docs/METHOD.md §8; docs/DATA.md lists them for users).

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

Hidden files, AppleDouble ``._*`` and ``__MACOSX`` are skipped. ``index_split`` returns a `SplitIndex`:
paths, labels, names and (AffectNet 2017) face boxes, nothing decoded.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from adadf_core.data.align.folder import ALIGN_RECORD, read_manifest
from adadf_core.data.classes import AFFECTNET_CLASSES, CLASS_NAMES, DATASET_NAMES, RAF_CLASSES, SFEW_CLASSES
from adadf_core.data.images import is_hidden
from adadf_core.data.labelfiles import (AFFECTNET_CSV_HEADER, check_label, DatasetError, DatasetNotFoundError,
                                        LabelLine, read_affectnet_csv, read_label_lines, read_text_file,
                                        refuse_duplicates, sample_key)


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
