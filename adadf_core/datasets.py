"""Data sets: SynthFER, RAF-DB, AffectNet-7/8, SFEW 2.0 and generic image folders (docs/METHOD.md §8).

    ds = load_split(name, root, split, image_size=224, recipe="official",
                    noise_rate=0.0, noise_seed=0, noise_file=None, cache="memory", max_samples=None)
    image, label, index = ds[i]

Layouts (label orders in ``CLASS_NAMES``):
  raf / synthfer  EmoLabel/list_patition_label.txt ("train_00001.jpg 5", 1-based) and
                  Image/aligned/<stem>_aligned.jpg; synthfer adds EmoLabel/distribution.csv (ground truth).
  affectnet7/8    {train_set,val_set}/images/<id>.<ext> + annotations/<id>_exp.npy; the test split is
                  val_set; affectnet7 drops label 7 (Contempt).
  sfew            {Train,Val}/<Emotion>/*; Val is the test split; alphabetical class order.
  imagefolder     <split>/<class>/* with split folders train/test (or Train/Val, val); class names are
                  the sorted class folders of the training split.

Label noise is applied to the training split only (test labels never change). ``max_samples`` keeps a
deterministic *first-N stratified* subset: each class keeps its first samples in file order, in
proportion to its share of the split (largest remainder), before any noise is applied.

Decoded-image cache: ``cache="memory"`` decodes every image once into one uint8 buffer; ``"mmap"`` writes
that buffer to ``<cache_dir>/<key>.npy`` (default cache dir: $ADADF_CACHE or <repo>/data/cache) and
memory-maps it (re-used by later runs); ``"none"`` decodes on every access. Images are stored after the
transform's deterministic resize when that shrinks them (otherwise at their decoded size), so a cached
and an uncached data set return identical tensors.
"""
from __future__ import annotations

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

from .images import ImageDecodeError, decoded_size
from .images import decode_image as _decode_any
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


class DatasetError(ValueError):
    """A data set is missing, malformed or not what was asked for (the message names the path)."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A data set root, label file or image does not exist."""


# --------------------------------------------------------------------------------------------
# indexing: which images, which labels

@dataclass
class SplitIndex:
    paths: list[Path]                       # absolute image paths
    names: list[str]                        # image paths relative to the root
    ids: list[str]                          # the names the data set's own label files use
    labels: np.ndarray                      # int64 [N], 0-based, the data set's label order
    class_names: list[str]
    gt: Optional[np.ndarray] = None         # float32 [N, C] (SynthFER)
    extra: dict = field(default_factory=dict)


def read_text_file(path: Path, what: str) -> str:
    """The text of a label or table file (UTF-8, a BOM accepted); any other encoding is a one-line error
    naming the file and the first byte that is not UTF-8."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise DatasetError(f"{what} {path}: not UTF-8 text (byte 0x{data[error.start]:02x} on line {line}); "
                           "save it as UTF-8") from None


def _describe_layout(root: Path) -> str:
    """A guess of what ``root`` holds, for error messages."""
    if (root / RAF_LABEL_FILE).exists():
        return "a RAF-DB/SynthFER folder (EmoLabel/list_patition_label.txt)"
    if (root / "train_set").is_dir() or (root / "val_set").is_dir():
        return "an AffectNet folder (train_set/, val_set/)"
    if (root / "Train").is_dir() or (root / "Val").is_dir():
        return "an SFEW-style folder (Train/, Val/)"
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "an image folder (train/, test/)"
    try:
        entries = sorted(p.name for p in root.iterdir())[:8]
    except OSError:
        entries = []
    return f"a folder holding {entries}" if entries else "an empty folder"


def _require_file(path: Path, what: str, root: Path, expected: str) -> None:
    if not path.is_file():
        raise DatasetNotFoundError(f"{what} {path} not found; expected {expected}. "
                                   f"{root} looks like {_describe_layout(root)}")


def _check_label(value: int, num_classes: int, where: str, base: int = 0) -> int:
    if not base <= value < num_classes + base:
        raise DatasetError(f"{where}: label {value} is out of range; expected an integer in "
                           f"{base}..{num_classes - 1 + base}")
    return value - base


def _index_raf(root: Path, split: str, synthfer: bool) -> SplitIndex:
    label_file = root / RAF_LABEL_FILE
    _require_file(label_file, "RAF-DB label file", root,
                  "the RAF-DB layout EmoLabel/list_patition_label.txt + Image/aligned/*_aligned.jpg")
    paths, names, ids, labels = [], [], [], []
    for lineno, line in enumerate(read_text_file(label_file, "label file").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DatasetError(f"{label_file}:{lineno}: cannot parse {line!r}; expected '<name>.jpg <label 1..7>'")
        name, value = parts[0], int(parts[1])
        if not (name.startswith("train_") or name.startswith("test_")):
            raise DatasetError(f"{label_file}:{lineno}: image name {name!r} should start with 'train_' or 'test_'")
        if not name.startswith(split + "_"):
            continue
        label = _check_label(value, 7, f"{label_file}:{lineno}", base=1)
        rel = f"Image/aligned/{Path(name).stem}_aligned.jpg"
        path = root / rel
        if not path.is_file():
            raise DatasetNotFoundError(f"image {path} listed in {label_file}:{lineno} not found")
        paths.append(path)
        names.append(rel)
        ids.append(name)
        labels.append(label)
    index = SplitIndex(paths, names, ids, np.asarray(labels, dtype=np.int64), list(RAF_CLASSES))
    if synthfer:
        index.gt = _read_distribution(root, ids)
    return index


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


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def _index_affectnet(root: Path, split: str, drop_contempt: bool) -> SplitIndex:
    sub = root / ("train_set" if split == "train" else "val_set")
    img_dir, ann_dir = sub / "images", sub / "annotations"
    for d in (img_dir, ann_dir):
        if not d.is_dir():
            raise DatasetNotFoundError(f"AffectNet folder {d} not found; expected {{train_set,val_set}}/images/"
                                       f"<id>.jpg + annotations/<id>_exp.npy. {root} looks like "
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
        label = _check_label(value, 8, str(ann))
        if drop_contempt and label == 7:
            dropped += 1
            continue
        paths.append(path)
        names.append(str(path.relative_to(root)))
        ids.append(path.name)
        labels.append(label)
    classes = AFFECTNET_CLASSES[:7] if drop_contempt else list(AFFECTNET_CLASSES)
    return SplitIndex(paths, names, ids, np.asarray(labels, dtype=np.int64), classes,
                      extra=dict(dropped_contempt=dropped))


def _index_class_folders(root: Path, split_dir: Path, class_names: list[str], strict: bool) -> SplitIndex:
    """<split_dir>/<class>/* with a fixed class list. ``strict``: every class folder must be present."""
    folders = sorted(p for p in split_dir.iterdir() if p.is_dir())
    unknown = [p.name for p in folders if p.name not in class_names]
    if unknown:
        raise DatasetError(f"{split_dir}: unexpected class folder(s) {unknown}; expected {class_names}")
    paths, names, labels = [], [], []
    for label, cname in enumerate(class_names):
        folder = split_dir / cname
        images = _images_in(folder) if folder.is_dir() else []
        if strict and not images:
            raise DatasetError(f"class folder {folder} is missing or holds no images "
                               f"(extensions {', '.join(IMAGE_EXTS)}); every class needs at least one")
        for p in images:
            paths.append(p)
            names.append(str(p.relative_to(root)))
            labels.append(label)
    return SplitIndex(paths, names, list(names), np.asarray(labels, dtype=np.int64), list(class_names))


def _index_sfew(root: Path, split: str) -> SplitIndex:
    split_dir = root / ("Train" if split == "train" else "Val")
    if not split_dir.is_dir():
        raise DatasetNotFoundError(f"SFEW split folder {split_dir} not found; expected Train/<Emotion>/* and "
                                   f"Val/<Emotion>/* with emotions {SFEW_CLASSES}. {root} looks like "
                                   f"{_describe_layout(root)}")
    return _index_class_folders(root, split_dir, SFEW_CLASSES, strict=True)


_FOLDER_SPLITS = {"train": ("train", "Train"), "test": ("test", "Test", "val", "Val")}


def _find_split_dir(root: Path, split: str) -> Path:
    for name in _FOLDER_SPLITS[split]:
        if (root / name).is_dir():
            return root / name
    raise DatasetNotFoundError(f"image-folder split {split!r} not found under {root}; expected one of "
                               f"{', '.join(_FOLDER_SPLITS[split])} holding <class>/* folders. "
                               f"{root} looks like {_describe_layout(root)}")


def _index_imagefolder(root: Path, split: str) -> SplitIndex:
    train_dir = _find_split_dir(root, "train")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"{train_dir} holds no class folders; expected {train_dir}/<class>/<image>")
    if split == "train":
        return _index_class_folders(root, train_dir, classes, strict=True)
    return _index_class_folders(root, _find_split_dir(root, "test"), classes, strict=False)


def index_split(name: str, root: str | Path, split: str) -> SplitIndex:
    """List the images and labels of one split, checking the layout. Raises :class:`DatasetError`."""
    if name not in CLASS_NAMES:
        raise DatasetError(f"unknown data set {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split {split!r}; expected 'train' or 'test'")
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
        index = _index_imagefolder(root, split)
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


def read_label_file(path: str | Path, num_classes: int) -> dict[str, int]:
    """An external label file in the RAF-DB list format (``name label``, label 1-based) -> {name: 0-based}."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"label file {path} not found; expected lines '<name> <label 1..{num_classes}>'")
    out: dict[str, int] = {}
    for lineno, line in enumerate(read_text_file(path, "label file").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DatasetError(f"{path}:{lineno}: cannot parse {line!r}; expected '<name> <label 1..{num_classes}>'")
        out[parts[0]] = _check_label(int(parts[1]), num_classes, f"{path}:{lineno}", base=1)
    return out


def _apply_label_file(index: SplitIndex, labels: np.ndarray, path: str | Path) -> np.ndarray:
    table = read_label_file(path, len(index.class_names))
    pos = {name: i for i, name in enumerate(index.ids)}
    pos.update({name: i for i, name in enumerate(index.names)})
    unknown = [n for n in table if n not in pos]
    if unknown:
        raise DatasetError(f"label file {path} names {len(unknown)} image(s) that are not in this training split, "
                           f"e.g. {unknown[:5]}")
    noisy = labels.copy()
    for name, label in table.items():
        noisy[pos[name]] = label
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


def _store_sizes(paths: Sequence[Path], transform) -> tuple[np.ndarray, np.ndarray]:
    """Stored (height, width) per image and whether the transform's resize is applied before storing."""
    sizes = np.zeros((len(paths), 2), dtype=np.int64)
    pre_done = np.zeros(len(paths), dtype=bool)
    for i, p in enumerate(paths):
        try:
            w, h = decoded_size(p)               # after EXIF rotation, as the decoder returns it
        except FileNotFoundError:
            raise DatasetNotFoundError(f"image {p} not found")
        except ImageDecodeError as e:
            raise DatasetError(f"cannot decode image {p}: {e.reason}")
        if isinstance(transform, FERTransform):
            pw, ph = transform.pre_size(w, h)
            if pw * ph < w * h:
                w, h, pre_done[i] = pw, ph, True
        sizes[i] = (h, w)
    return sizes, pre_done


def build_store(paths: Sequence[Path], transform, mode: str, cache_dir: Optional[Path] = None,
                progress: bool = True, desc: str = "decoding") -> tuple[ImageStore, np.ndarray]:
    """Decode every image once. Returns the store and the per-image flag 'resize already applied'."""
    from tqdm.auto import tqdm

    sizes, pre_done = _store_sizes(paths, transform)
    offsets = np.concatenate([[0], np.cumsum(sizes[:, 0] * sizes[:, 1] * 3)])
    index = np.stack([offsets[:-1], sizes[:, 0], sizes[:, 1]], axis=1).astype(np.int64)
    total = int(offsets[-1])
    target = None
    if mode == "mmap":
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        key = hashlib.sha1(json.dumps(dict(
            paths=[str(Path(p).resolve()) for p in paths],
            stat=[(os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths],
            sizes=sizes.tolist(), pre=pre_done.tolist(), pre_repr=repr(getattr(transform, "pre", None)),
        )).encode()).hexdigest()[:20]
        target = cache_dir / f"images-{key}.npy"
        if target.exists():
            return ImageStore(None, index, target), pre_done
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        buffer = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(total,))
    else:
        buffer = np.empty(total, dtype=np.uint8)
    for i, p in enumerate(tqdm(paths, desc=desc, disable=not progress, leave=False)):
        img = decode_image(p)
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
    return ImageStore(buffer, index), pre_done


# --------------------------------------------------------------------------------------------
# the data set

class FERDataset(Dataset):
    """One split of a data set. ``ds[i] -> (image tensor, training label, i)``.

    Attributes (docs/ARCHITECTURE.md, "Data contract"): labels, clean_labels, flipped, class_names,
    num_classes, gt_distribution, names; also ids (label-file names), paths, root, split, name,
    transform, noise (a description of the label noise applied).
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

    def __len__(self) -> int:
        return len(self.paths)

    def raw_image(self, i: int) -> Image.Image:
        """The decoded RGB image before the transform's random part (after its resize when cached so)."""
        if self.store is None:
            return decode_image(self.paths[i])
        return Image.fromarray(self.store[i])

    def __getitem__(self, i: int):
        i = int(i)
        t = self.transform
        if self.store is None:
            img = decode_image(self.paths[i])
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
               progress: bool = True) -> FERDataset:
    """Load one split (see the module docstring). Noise arguments only affect the training split."""
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
    index = index_split(name, root, split)
    if max_samples is not None:
        keep = stratified_first(index.labels, int(max_samples))
        index = SplitIndex([index.paths[i] for i in keep], [index.names[i] for i in keep],
                           [index.ids[i] for i in keep], index.labels[keep], index.class_names,
                           None if index.gt is None else index.gt[keep], index.extra)
    labels = index.labels.copy()
    noise: dict = dict(kind="none")
    if split == "train":
        if noise_file is not None and noise_rate:
            raise DatasetError("give either noise_rate or noise_file, not both")
        if noise_file is not None:
            labels = _apply_label_file(index, labels, noise_file)
            noise = dict(kind="file", file=str(noise_file))
        elif noise_rate:
            labels = symmetric_noise(labels, float(noise_rate), len(index.class_names), int(noise_seed))
            noise = dict(kind="symmetric", rate=float(noise_rate), seed=int(noise_seed))
        noise["flipped"] = int((labels != index.labels).sum())
    transform = build_transform(name, split, image_size, recipe)
    store = pre_done = None
    if cache != "none":
        store, pre_done = build_store(index.paths, transform, cache, cache_dir, progress,
                                      desc=f"decoding {name} {split}")
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
