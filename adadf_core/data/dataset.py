"""The Dataset of one split and the training sampler (docs/METHOD.md §8; contract in docs/ARCHITECTURE.md).

    ds = load_split(name, root, split, image_size=224, recipe="official",
                    noise_rate=0.0, noise_seed=0, noise_file=None, cache="memory", max_samples=None)
    image, label, index = ds[i]
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from adadf_core.data import synthfer
from adadf_core.data.cache import CACHE_MODES, build_store, decode_face, ImageStore, verify_files
from adadf_core.data.classes import CLASS_NAMES, DATASET_NAMES
from adadf_core.data.labelfiles import DatasetError
from adadf_core.data.layouts import index_split, SplitIndex
from adadf_core.data.subsets import apply_label_file, stratified_first, symmetric_noise
from adadf_core.data.transforms import build_transform, FERTransform


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
        root = synthfer.ensure()
    root = Path(root)
    index = index_split(name, root, split, class_names)
    root = Path(index.extra.get("base", root))        # RAF-DB given by its archive folder: names are under basic/
    file_labels = None
    if split == "train" and noise_file is not None:
        if noise_rate:
            raise DatasetError("give either noise_rate or noise_file, not both")
        file_labels = apply_label_file(index, index.labels, noise_file, noise_format)   # the whole split
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
        verify_files(index.paths, index.boxes)
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
